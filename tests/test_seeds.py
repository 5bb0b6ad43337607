"""Method-seed statistics (``--method-seeds``): oracle tests of the interval and the verdict rule, and the CLI."""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import replace

import pytest
from scipy import stats

from muaudit.cli import main
from muaudit.results import Scorecard
from muaudit.seeds import mean_interval, method_seeds, seed_section


def test_mean_interval_matches_the_textbook_formula():
    values = [2.0, 3.5, 1.0, 4.25, 2.75]
    mean, std, (low, high) = mean_interval(values)
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    assert mean == pytest.approx(statistics.fmean(values)) and std == pytest.approx(statistics.stdev(values))
    assert (low, high) == pytest.approx((statistics.fmean(values) - half, statistics.fmean(values) + half))
    assert mean_interval([1.0, 1.0, 1.0]) == (1.0, 0.0, (1.0, 1.0))


def test_seeds_are_distinct_and_start_with_the_single_run_seed():
    seeds = method_seeds(123, 4)
    assert seeds[0] == 123 and len(set(seeds)) == 4 and method_seeds(123, 4) == seeds


@pytest.fixture(scope="module")
def card(tmp_path_factory, cache_dir) -> Scorecard:
    out = tmp_path_factory.mktemp("seeds") / "one"
    assert main(["score", "--method", "finetune", "--method-arg", "epochs=1", "--attacks", "loss", "--quiet",
                 "--gold-seeds", "3", "--cache-dir", str(cache_dir), "--out", str(out)]) == 0
    return Scorecard.from_dict(json.loads((out / "scorecard.json").read_text()))


def _with_check_values(card: Scorecard, check: str, values: list[float]) -> list[Scorecard]:
    """Copies of ``card`` whose verdict ``check`` has the given unlearned values (one per seed), all determined."""
    out = []
    for value in values:
        verdicts = tuple(replace(v, unlearned=value, verdict="aligned") if v.check == check
                         else replace(v, verdict="aligned") for v in card.verdicts)
        out.append(replace(card, verdicts=verdicts))
    return out


def test_the_verdict_over_seeds_follows_the_mean_interval_and_the_band(card):
    check = next(v for v in card.verdicts if v.check == "forget_loss")  # higher loss = forgot more
    low, high = check.band
    width = high - low
    assert width > 0
    inside = [low + width * f for f in (0.4, 0.5, 0.6)]
    below = [low - width - d for d in (0.10, 0.11, 0.12)]
    above = [high + width + d for d in (0.10, 0.11, 0.12)]
    straddling = [low - width, low + width / 2, high + width]  # a wide spread over seeds: the interval overlaps
    verdict = {}
    for name, values in (("inside", inside), ("below", below), ("above", above), ("straddling", straddling)):
        section = seed_section(_with_check_values(card, "forget_loss", values), [1, 2, 3])
        verdict[name] = next(v for v in section["verdicts"] if v["check"] == "forget_loss")
    assert verdict["inside"]["verdict"] == "aligned"
    assert verdict["below"]["verdict"] == "under-forgetting"
    assert verdict["above"]["verdict"] == "over-forgetting"
    assert verdict["straddling"]["verdict"] == "aligned"
    assert verdict["below"]["mean"] == pytest.approx(low - width - 0.11)


def test_an_undetermined_check_stays_undetermined(card):
    cards = [replace(card, verdicts=tuple(replace(v, verdict="undetermined") for v in card.verdicts))] * 2
    section = seed_section(cards, [1, 2])
    assert {v["verdict"] for v in section["verdicts"]} == {"undetermined"}
    assert section["verdict_summary"] == "undetermined"


def test_cli_method_seeds(card, tmp_path, cache_dir, capsys):
    out = tmp_path / "three"
    assert main(["score", "--method", "finetune", "--method-arg", "epochs=1", "--attacks", "loss", "--quiet",
                 "--gold-seeds", "3", "--cache-dir", str(cache_dir), "--method-seeds", "3", "--out", str(out)]) == 0
    raw = json.loads((out / "scorecard.json").read_text())
    section = raw["method_seeds"]
    assert section["count"] == 3 and len(set(section["seeds"])) == 3
    forget = next(r for r in section["readouts"] if r["name"] == "forget_error")
    assert forget["values"][0] == card.readout("forget_error").unlearned  # the first seed is the single run
    assert forget["mean"] == pytest.approx(statistics.fmean(forget["values"]))
    assert forget["interval"][0] <= forget["mean"] <= forget["interval"][1]
    assert "over 3 method seeds" in capsys.readouterr().out
    assert "## Over method seeds" in (out / "scorecard.md").read_text()
    assert Scorecard.from_dict(raw).method_seeds == section


def test_compare_method_seeds_gives_each_method_its_statistics(card, tmp_path, cache_dir):
    out = tmp_path / "cmp"
    assert main(["compare", "--methods", "finetune,neggrad", "--method-arg", "finetune.epochs=1", "--method-arg",
                 "neggrad.epochs=1", "--attacks", "loss", "--quiet", "--gold-seeds", "3", "--cache-dir",
                 str(cache_dir), "--method-seeds", "2", "--out", str(out)]) == 0
    raw = json.loads((out / "comparison.json").read_text())
    sections = {c["method"]["name"]: c["method_seeds"] for c in raw["scorecards"]}
    assert set(sections) == {"finetune", "neggrad"} and all(s["count"] == 2 for s in sections.values())
    forget = next(r for r in sections["finetune"]["readouts"] if r["name"] == "forget_error")
    assert forget["values"][0] == card.readout("forget_error").unlearned  # the same first run as score's
    markdown = (out / "comparison.md").read_text()
    assert "## Over method seeds" in markdown and "### finetune" in markdown and "### neggrad" in markdown


@pytest.mark.parametrize("command", [["score", "--method", "finetune"], ["compare", "--methods", "finetune"]])
def test_method_seeds_zero_is_a_usage_error(tmp_path, capsys, command):
    assert main([*command, "--method-seeds", "0", "--cache-dir", str(tmp_path / "n")]) == 2
    assert "--method-seeds must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "n").exists()
