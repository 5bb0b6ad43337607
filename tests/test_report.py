"""Plots, per-example arrays and the HTML report (issue 13, items 1-3), and the report in a real headless browser."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from muaudit import plot
from muaudit.arrays import AuditArrays
from muaudit.audit import build_scorecard, prepare, run_method
from muaudit.cache import TensorCache
from muaudit.cli import main
from muaudit.comparison import Comparison
from muaudit.plugins import ATTACKS, load_by_name
from muaudit.results import Scorecard
from muaudit.task import NAMED_TASKS
from muaudit.testing import load_method

ATTACK_NAMES = ("loss", "entropy-lr")
GOLDS = 3


def _audit(cache: Path, method: str = "finetune") -> Scorecard:
    setup = prepare(NAMED_TASKS["digits"], gold_count=GOLDS, cache=TensorCache(cache), device=torch.device("cpu"))
    run = run_method(setup, load_method(method), {"epochs": 1} if method == "finetune" else {})
    return build_scorecard(setup, run, [(load_by_name(ATTACKS, a), {}) for a in ATTACK_NAMES])


@pytest.fixture(scope="module")
def card(cache_dir) -> Scorecard:
    return _audit(cache_dir)


@pytest.fixture(scope="module")
def second(cache_dir) -> Scorecard:
    return _audit(cache_dir, "neggrad")


def _png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------ plots
@pytest.mark.parametrize("log", [False, True])
def test_roc_draws_every_gold_model_and_the_band(card, tmp_path, log):
    ax = plot.roc(card, "loss", log=log, path=tmp_path / "roc.png")
    labels = [line.get_label() for line in ax.lines]
    assert labels == ["unlearned", "original", *[f"gold {j}" for j in range(GOLDS)], "chance"]
    assert len(ax.collections) == 1  # the shaded gold band
    assert ax.get_xscale() == ("log" if log else "linear")
    fpr, tpr = ax.lines[2].get_data()  # gold 0 at full resolution, as in the arrays
    expected = card.arrays.scores["loss"]["gold_0"].roc()
    assert np.array_equal(fpr, expected[0]) and np.array_equal(tpr, expected[1])
    _png(tmp_path / "roc.png")


def test_roc_without_arrays_uses_the_scorecard_summary(card, tmp_path):
    loaded = Scorecard.from_dict(json.loads(card.to_json()))
    assert loaded.arrays is None
    ax = plot.roc(loaded, "entropy-lr", path=tmp_path / "roc.png")
    assert [line.get_label() for line in ax.lines] == ["unlearned", "original", "gold 0", "chance"]
    _png(tmp_path / "roc.png")


@pytest.mark.parametrize("quantity", ["entropy", "loss"])
def test_distribution_draws_every_model(card, tmp_path, quantity):
    ax = plot.distribution(card, quantity, path=tmp_path / "d.svg")
    labels = [p.get_label() for p in ax.patches]
    assert labels == ["gold band", "unlearned", "original", *[f"gold {j}" for j in range(GOLDS)]]
    heights = ax.patches[1].get_data().values
    assert heights.sum() == pytest.approx(1.0)  # fraction of D_f per bin
    assert (tmp_path / "d.svg").read_text().startswith("<?xml")


def test_entropy_distribution_falls_back_to_the_json_histograms(card):
    ax = plot.distribution(Scorecard.from_dict(card.to_dict()), "entropy")
    assert [p.get_label() for p in ax.patches] == ["gold 0", "original", "unlearned"]


def test_gaps_has_one_series_per_method_with_intervals(card, second, tmp_path):
    ax = plot.gaps([card, second], path=tmp_path / "gaps.png")
    assert [c.get_label() for c in ax.containers] == ["finetune", "neggrad"]
    bars = ax.containers[0].lines[2]  # the x error bars: some readouts have intervals
    assert len(bars) == 1 and len(bars[0].get_segments()) > 0
    assert len(ax.get_yticklabels()) >= 20
    _png(tmp_path / "gaps.png")


def test_verdicts_grid_has_a_cell_per_method_and_check(card, second, tmp_path):
    ax = plot.verdicts(Comparison("digits", "x" * 64, GOLDS, (card, second), ()), path=tmp_path / "v.png")
    assert len(ax.images) == 1 and ax.images[0].get_array().shape == (2, len(card.verdicts))
    assert len(ax.texts) == 2 * len(card.verdicts)
    _png(tmp_path / "v.png")


def test_exposed_shows_images_where_the_data_are_images(card, tmp_path):
    ax = plot.exposed(card, "loss", path=tmp_path / "e.png")
    assert len(ax.images) == 1 and len(ax.texts) == len(card.attacks[0].unlearned["most_exposed"])
    _png(tmp_path / "e.png")
    bars = plot.exposed(Scorecard.from_dict(card.to_dict()), "loss")  # no thumbnails: a bar chart
    assert len(bars.images) == 0 and len(bars.patches) == len(card.attacks[0].unlearned["most_exposed"])


def test_plots_draw_on_given_axes(card):
    left, right = plot.new_axes(ncols=2)
    assert plot.roc(card, ax=left) is left and plot.distribution(card, ax=right) is right
    assert left.figure is right.figure


# ----------------------------------------------------------------------------------------- arrays
def test_arrays_file_holds_every_score_loss_and_entropy(card, tmp_path):
    from muaudit.report import report_files

    files = report_files(card)
    (tmp_path / "arrays.npz").write_bytes(files["arrays.npz"])
    (tmp_path / "roc.npz").write_bytes(files["roc.npz"])
    roles = ["unlearned", "original", *[f"gold_{j}" for j in range(GOLDS)]]
    n_forget = card.task["forget_size"]
    with np.load(tmp_path / "arrays.npz", allow_pickle=False) as raw:
        assert list(raw["roles"]) == roles
        assert raw["forget/indices"].shape == (n_forget,) and raw["forget/labels"].dtype == np.int64
        for role in roles:
            assert raw[f"forget/loss/{role}"].shape == (n_forget,) == raw[f"forget/entropy/{role}"].shape
        assert raw["forget/entropy/unlearned"].mean() == pytest.approx(card.readout("forget_entropy_mean").unlearned)
        assert raw["thumbnails/images"].dtype == np.uint8 and raw["thumbnails/images"].shape[1:] == (8, 8, 1)
        for report in card.attacks:
            for role, metrics in [("unlearned", report.unlearned), ("original", report.original),
                                  *[(f"gold_{j}", g) for j, g in enumerate(report.golds)]]:
                members = raw[f"scores/{report.name}/{role}/members"]
                nonmembers = raw[f"scores/{report.name}/{role}/nonmembers"]
                assert len(members) == metrics["n_members"] and len(nonmembers) == metrics["n_nonmembers"]
                labels = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
                assert roc_auc_score(labels, np.r_[members, nonmembers]) == pytest.approx(metrics["auc"], abs=1e-12)
    with np.load(tmp_path / "roc.npz", allow_pickle=False) as roc:
        assert len(roc.files) == 2 * len(ATTACK_NAMES) * len(roles)
        assert roc["loss/gold_2/fpr"][-1] == 1.0 and len(roc["loss/gold_2/tpr"]) > 100  # full resolution
    again = AuditArrays.load(str(tmp_path / "arrays.npz"))
    assert again.roles == tuple(roles) and set(again.scores) == set(ATTACK_NAMES)
    assert np.array_equal(again.scores["loss"]["gold_1"].members, card.arrays.scores["loss"]["gold_1"].members)


def test_arrays_stay_out_of_the_scorecard_json(card):
    text = card.to_json()
    assert "arrays" not in json.loads(text) and len(text) < 200_000
    assert Scorecard.from_dict(json.loads(text)).to_dict() == card.to_dict()
    assert replace(card, arrays=None) == card  # arrays take no part in equality


def test_scores_survive_the_attack_run_cache_and_a_damaged_copy_is_recomputed(tmp_path):
    cold = _audit(tmp_path)
    warm = _audit(tmp_path)  # original and gold runs from the disk cache
    for attack in ATTACK_NAMES:
        for role in ("original", "gold_0", "gold_2"):
            assert warm.arrays.scores[attack][role].digest() == cold.arrays.scores[attack][role].digest()
    companions = sorted((tmp_path / "attack-runs").glob("*.npz"))
    assert len(companions) == len(ATTACK_NAMES) * (1 + GOLDS)
    for path in companions:
        path.write_bytes(path.read_bytes()[:-20])
    again = _audit(tmp_path)
    assert again.arrays.scores["loss"]["gold_1"].digest() == cold.arrays.scores["loss"]["gold_1"].digest()
    assert again.to_dict()["readouts"] == cold.to_dict()["readouts"]


# ------------------------------------------------------------------------------------ HTML, CLI
def test_html_report_is_self_contained(card):
    from muaudit.report import scorecard_html

    html = scorecard_html(card)
    assert html.startswith("<!DOCTYPE html>") and "<script" not in html
    assert "http://" not in html and "https://" not in html  # nothing fetched: works offline
    assert html.count("<img ") >= 6 and "data:image/png;base64," in html
    assert "<details><summary>Provenance</summary>" in html and "95% interval" in html
    assert "class='under-forgetting'" in html or "class='aligned'" in html or "class='undetermined'" in html


def test_markdown_has_units_intervals_and_a_provenance_list(card):
    text = card.to_markdown()
    assert "| readout | unit | unlearned [95% interval] |" in text
    auc = card.readout("mia_loss_auc")
    low, high = card.interval("mia_loss_auc")
    assert f"| mia_loss_auc | fraction | {auc.unlearned:.4f} [{low:.4f}, {high:.4f}] |" in text
    provenance = text.split("## Provenance", 1)[1]
    assert provenance.strip().startswith("- versions:") and "`{" not in provenance


def test_score_out_writes_the_report_and_arrays(cache_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["score", "--method", "finetune", "--method-arg", "epochs=1", "--attacks", "loss", "--cache-dir",
                 str(cache_dir), "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["arrays.npz", "report.html", "roc.npz", "scorecard.json",
                                                     "scorecard.md"]
    with np.load(out / "arrays.npz", allow_pickle=False) as raw:
        assert "scores/loss/gold_1/members" in raw.files
    from muaudit.report import render

    before = (out / "report.html").read_text()
    assert render(out) == out / "report.html"  # regenerated from the JSON and arrays
    assert (out / "report.html").read_text().count("<img ") == before.count("<img ")


def test_compare_out_writes_one_report_with_every_method(cache_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "--methods", "finetune,neggrad", "--method-arg", "finetune.epochs=1", "--attacks",
                 "loss", "--cache-dir", str(cache_dir), "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    with np.load(out / "arrays.npz", allow_pickle=False) as raw:
        assert list(raw["roles"])[:2] == ["unlearned:finetune", "unlearned:neggrad"]
    html = (out / "report.html").read_text()
    assert "finetune [95% interval]" in html and "neggrad [95% interval]" in html
    assert "## Provenance" in (out / "comparison.md").read_text()
    from muaudit.report import render

    render(out / "comparison.json")
    assert "neggrad" in (out / "report.html").read_text()


def test_a_report_that_fails_to_render_keeps_the_result(cache_dir, tmp_path, capsys, monkeypatch):
    from muaudit import cli

    def broken(result):
        raise RuntimeError("plot bug")

    monkeypatch.setattr(cli, "_report", broken)
    out = tmp_path / "run"
    code = main(["score", "--method", "finetune", "--method-arg", "epochs=1", "--attacks", "loss", "--cache-dir",
                 str(cache_dir), "--out", str(out), "--quiet", "--json"])
    stdout, err = capsys.readouterr()
    assert code == 4 and "Traceback" not in err and "could not render the report" in err
    assert json.loads(stdout)["method"]["name"] == "finetune"
    assert sorted(p.name for p in out.iterdir()) == ["scorecard.json", "scorecard.md"]


def test_cli_start_up_imports_neither_matplotlib_nor_torch():
    code = ("import sys, muaudit.cli, muaudit.report, muaudit.arrays\n"
            "print(sorted(m for m in ('matplotlib', 'torch') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------------- headless browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_PROBE = ("<script>window.addEventListener('load', () => {const all = [...document.images]; document.title = "
          "'IMAGES ' + all.filter(i => i.complete && i.naturalWidth > 0).length + '/' + all.length;});</script>")


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'profile'}", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_loads_in_a_headless_browser(card, tmp_path):
    from muaudit.report import scorecard_html

    html = scorecard_html(card)
    report = tmp_path / "report.html"
    report.write_text(html, encoding="utf-8")
    probe = tmp_path / "probe.html"  # the report itself has no script; the probe adds one to count images
    probe.write_text(html.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    loaded = _chromium(tmp_path, "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
                       "--dump-dom", probe.as_uri())
    count = html.count("<img ")
    assert f"<title>IMAGES {count}/{count}</title>" in loaded.stdout, loaded.stderr[-2000:]
    errors = [line for line in loaded.stderr.splitlines() if "Uncaught" in line or "CONSOLE" in line]
    assert not errors, errors
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, "--window-size=1200,3000", f"--screenshot={shot}", report.as_uri())
    _png(shot)


def test_a_legacy_comparison_list_renders(tmp_path):
    """``compare`` wrote a bare list of scorecards before failures were recorded; committed reports use it."""
    import json as _json
    from pathlib import Path as _Path

    from muaudit.report import render

    legacy = _Path(__file__).resolve().parents[1] / "reports" / "attacks" / "digits" / "comparison.json"
    raw = _json.loads(legacy.read_text())
    assert isinstance(raw, list)
    (tmp_path / "comparison.json").write_text(_json.dumps(raw[:2]))
    comparison = Comparison.from_dict(raw[:2])
    assert [c.method["name"] for c in comparison.scorecards] == [c["method"]["name"] for c in raw[:2]]
    html = render(tmp_path).read_text()
    assert "<img" in html and raw[1]["method"]["name"] in html
