"""``muaudit merge`` (scorecards from several runs into one comparison, with its refusals) and ``muaudit golds``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from muaudit.cli import main


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir) -> dict[str, Path]:
    """Scorecards written by separate ``score`` runs (as on separate machines sharing a task)."""
    root = tmp_path_factory.mktemp("runs")
    argv = {"finetune": ["--method", "finetune", "--method-arg", "epochs=1"],
            "neggrad": ["--method", "neggrad", "--method-arg", "epochs=1"],
            "class": ["--method", "finetune", "--method-arg", "epochs=1", "--task", "digits-class"],
            "three-golds": ["--method", "neggrad", "--method-arg", "epochs=1", "--gold-seeds", "3"]}
    for name, extra in argv.items():
        assert main(["score", *extra, "--attacks", "loss", "--cache-dir", str(cache_dir), "--quiet",
                     "--out", str(root / name)]) == 0
    return {name: root / name for name in argv}


def _one_error(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("muaudit: error:"), lines
    return lines[0]


def test_merge_combines_runs_into_one_comparison(runs, tmp_path, capsys):
    out = tmp_path / "merged"
    assert main(["merge", str(runs["finetune"]), str(runs["neggrad"] / "scorecard.json"), "--out", str(out)]) == 0
    merged = json.loads((out / "comparison.json").read_text())
    assert [c["method"]["name"] for c in merged["scorecards"]] == ["finetune", "neggrad"]
    alone = json.loads((runs["neggrad"] / "scorecard.json").read_text())
    assert merged["scorecards"][1]["readouts"] == alone["readouts"]  # nothing recomputed
    assert (out / "report.html").is_file() and "| readout" in (out / "comparison.md").read_text()
    again = tmp_path / "again"  # a merged comparison merges further
    capsys.readouterr()
    assert main(["merge", str(out), str(runs["neggrad"]), "--out", str(again)]) == 2  # neggrad twice
    assert "repeats the scorecard of 'neggrad'" in _one_error(capsys)


@pytest.mark.parametrize("other, difference", [
    ("class", "different task"),
    ("three-golds", "different gold models"),
])
def test_merge_refuses_other_experiments(runs, tmp_path, capsys, other, difference):
    code = main(["merge", str(runs["finetune"]), str(runs[other]), "--out", str(tmp_path / "m")])
    line = _one_error(capsys)
    assert code == 2 and difference in line and str(runs[other]) in line
    assert not (tmp_path / "m").exists()


def test_merge_refuses_another_schema_version(runs, tmp_path, capsys):
    raw = json.loads((runs["neggrad"] / "scorecard.json").read_text())
    raw["schema_version"] = "1.2"
    (tmp_path / "old.json").write_text(json.dumps(raw))
    assert main(["merge", str(runs["finetune"]), str(tmp_path / "old.json")]) == 2
    assert "different schema version: 1.2 vs 1.4" in _one_error(capsys)


@pytest.mark.parametrize("content, fragment", [
    (None, "no such file"), ("{", "cannot be read as JSON"), ('{"a": 1}', "not a muaudit scorecard"),
    ("DIR", "holds neither"),
])
def test_merge_bad_paths_are_one_line(tmp_path, capsys, content, fragment):
    path = tmp_path / "x.json"
    if content == "DIR":
        path = tmp_path / "empty"
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    assert main(["merge", str(path)]) == 2
    assert fragment in _one_error(capsys)


def test_golds_warms_a_cache_that_later_runs_reuse(tmp_path, capsys):
    cache = tmp_path / "shared"
    assert main(["golds", "--task", "digits", "--gold-seeds", "2", "--cache-dir", str(cache), "--quiet"]) == 0
    assert "(3 trained now, 0 reused)" in capsys.readouterr().out
    assert main(["golds", "--task", "digits", "--gold-seeds", "2", "--cache-dir", str(cache), "--quiet"]) == 0
    assert "(0 trained now, 3 reused)" in capsys.readouterr().out
    assert main(["golds", "--gold-seeds", "0", "--cache-dir", str(cache)]) == 2
    assert "--gold-seeds must be at least 1" in _one_error(capsys)


def test_golds_warms_shadow_banks_that_a_later_audit_only_reads(tmp_path, capsys):
    from muaudit.api import prepare_audit
    from muaudit.attacking import run_attack
    from muaudit.audit import run_method
    from muaudit.plugins import ATTACKS, METHODS, load_by_name

    cache = tmp_path / "shared"
    warm = ["golds", "--task", "digits", "--attacks", "lira", "--attack-arg", "lira.n_shadows=4", "--cache-dir",
            str(cache), "--quiet"]
    assert main(warm) == 0
    assert "(4 shadow model(s) trained now)" in capsys.readouterr().out
    setup = prepare_audit(task="digits", cache_dir=cache, progress=False)
    run = run_method(setup, load_by_name(METHODS, "finetune"), {"epochs": 1}, None)
    result = run_attack(setup, load_by_name(ATTACKS, "lira"), run, {"n_shadows": 4})
    assert setup._bank.n_trained == 0  # the original, gold and shadow models all came from the warmed cache
    assert 0.0 <= result.unlearned.metrics.auc <= 1.0
    run_attack(setup, load_by_name(ATTACKS, "ulira"), run, {"n_shadows": 4})
    assert setup._bank.n_trained == 0  # ulira's trained shadows are lira's (it only unlearns them, as derived models)


@pytest.mark.parametrize("argv, fragment", [
    (["--attacks", "ulira"], "needs the method under audit, so golds cannot warm it"),
    (["--attack-arg", "lira.n_shadows=4"], "--attack-arg needs --attacks"),
    (["--attacks", "lira", "--attack-arg", "lira.n_shadows=3"], "must be even"),
    (["--attacks", "nope"], "nope"),
])
def test_golds_attack_warm_up_refusals(tmp_path, capsys, argv, fragment):
    code = main(["golds", "--cache-dir", str(tmp_path / "never"), *argv])
    assert code in (2, 3) and fragment in _one_error(capsys)
    assert not (tmp_path / "never").exists()
