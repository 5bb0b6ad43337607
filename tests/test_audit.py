"""The audit pipeline: gold retrains, the retrain method as a sanity anchor, scorecard schema and invariants."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from muaudit.audit import build_scorecard, run_method
from muaudit.checkpoint import state_dict_sha256
from muaudit.plugins import ATTACKS, load_by_name
from muaudit.results import Scorecard
from muaudit.testing import check_method, load_method, tiny_setup


@pytest.fixture(scope="module")
def five_gold_setup(cache_dir):
    return tiny_setup(cache_dir, "digits", gold_count=5)


@pytest.fixture(scope="module")
def loss_attack():
    return load_by_name(ATTACKS, "loss")


def _tolerance(readout, n_forget: int) -> float:
    """One forget example's worth of slack for readouts that are counts in disguise."""
    return {"%": 100.0 / n_forget, "fraction": 1.0 / n_forget}.get(readout.unit, 0.0)


def _outside_spread(card: Scorecard, n_forget: int, factor: float) -> list[str]:
    return [r.name for r in card.readouts
            if r.deviation is not None and r.spread_max is not None
            and r.deviation > factor * r.spread_max + _tolerance(r, n_forget)]


def test_gold_models_are_fresh_retrains_on_retain_only(five_gold_setup):
    golds = [g.model for g in five_gold_setup.golds]
    hashes = {state_dict_sha256(m.state_dict()) for m in golds}
    assert len(hashes) == 5  # different seeds, different initialisations
    first, second = (dict(m.named_parameters()) for m in golds[:2])
    assert all(not torch.equal(first[k], second[k]) for k in first)  # every layer freshly initialised
    assert len(five_gold_setup.retain) + len(five_gold_setup.forget) == len(five_gold_setup.data.train)


def test_gold_models_are_cached(cache_dir, five_gold_setup):
    again = tiny_setup(cache_dir, "digits", gold_count=5)
    assert all(g.from_cache for g in again.golds)
    assert [state_dict_sha256(g.model.state_dict()) for g in again.golds] == \
        [state_dict_sha256(g.model.state_dict()) for g in five_gold_setup.golds]


@pytest.mark.parametrize("seed", [0, 1])
def test_retrain_lies_within_the_gold_spread(five_gold_setup, loss_attack, seed):
    """retrain is one more gold draw: its deviation from gold_0 must look like gold_j's (factor 2 + one example)."""
    card = build_scorecard(five_gold_setup, run_method(five_gold_setup, load_method("retrain"), {}, seed), loss_attack)
    assert _outside_spread(card, len(five_gold_setup.forget), factor=2.0) == []


def test_a_method_that_does_nothing_is_flagged_on_full_class_forgetting(digits_class_setup, loss_attack):
    """Contrast for the previous test: the original model (shrunk by 0%) is far outside the gold spread."""
    run = run_method(digits_class_setup, load_method("finetune"), {"lr": 1e-6, "epochs": 1}, seed=0)
    card = build_scorecard(digits_class_setup, run, loss_attack)
    assert card.readout("forget_error").gap < -90  # gold never learned class 3; the original did
    assert "forget_error" in _outside_spread(card, len(digits_class_setup.forget), factor=2.0)


def test_distances_of_a_model_to_itself_are_zero(digits_setup, loss_attack):
    """Scoring the gold model against itself gives zero distance readouts and zero gaps."""
    run = run_method(digits_setup, load_method("finetune"), {"lr": 1e-6, "epochs": 1}, seed=0)
    run = type(run)(digits_setup.golds[0].model, run.plugin, run.params, run.seed, run.seconds, 0.0)
    card = build_scorecard(digits_setup, run, loss_attack)
    for r in card.readouts:
        if r.kind == "distance" or r.name.endswith("_to_gold"):
            assert r.unlearned == pytest.approx(0.0, abs=1e-12), r.name
        elif r.gap is not None:
            assert r.gap == pytest.approx(0.0, abs=1e-12), r.name


@pytest.mark.parametrize("name, params", [("retrain", {}), ("finetune", {"epochs": 2}),
                                          ("neggrad", {"lr": 1e-3, "epochs": 2})])
def test_core_methods_honour_the_contract(digits_setup, name, params):
    check_method(digits_setup, load_method(name), params)


def test_neggrad_raises_forget_loss_and_lowers_forget_accuracy(digits_setup):
    from muaudit import readouts as R

    run = run_method(digits_setup, load_method("neggrad"), {"lr": 0.01, "epochs": 6, "batch_size": 32}, seed=0)
    before, after = digits_setup.outputs(digits_setup.original), digits_setup.outputs(run.model)

    def loss(o):
        return torch.nn.functional.cross_entropy(o.forget_logits, o.forget_labels).item()

    assert loss(after) > 5 * loss(before)
    assert R.accuracy(after.forget_logits, after.forget_labels) < R.accuracy(before.forget_logits,
                                                                            before.forget_labels)


def test_finetune_keeps_retain_accuracy(digits_setup):
    from muaudit import readouts as R

    run = run_method(digits_setup, load_method("finetune"), {}, seed=0)
    out = digits_setup.outputs(run.model)
    assert R.accuracy(out.retain_logits, out.retain_labels) > 0.97


def test_scorecard_json_round_trip_and_pandas(digits_setup, loss_attack):
    card = build_scorecard(digits_setup, run_method(digits_setup, load_method("finetune"), {}, 0), loss_attack)
    raw = json.loads(card.to_json())
    assert raw["schema_version"] == "1.4"
    again = Scorecard.from_dict(raw)
    assert again.to_json() == card.to_json()
    frame = card.to_pandas()
    readouts, verdicts = frame[frame.section == "readout"], frame[frame.section == "verdict"]
    assert list(readouts["name"]) == [r.name for r in card.readouts]
    assert list(verdicts["verdict"]) == [v.verdict for v in card.verdicts]
    assert list(verdicts["band_low"]) == [v.band[0] for v in card.verdicts]
    with_interval = [r for r in card.readouts if r.interval is not None]
    assert list(readouts.dropna(subset=["interval_low"])["interval_low"]) == [r.interval[0] for r in with_interval]
    assert list(verdicts["interval_high"]) == [v.interval[1] for v in card.verdicts]
    assert "test_error" in card.to_text() and "| test_error |" in card.to_markdown()
    prov = raw["provenance"]
    assert prov["method_plugin"]["distribution"] == "muaudit"
    assert set(prov["versions"]) >= {"muaudit", "torch", "numpy"}
    assert prov["seeds"]["gold"] == [g.seed for g in digits_setup.golds]


def test_entropy_histograms_count_every_forget_example(digits_setup, loss_attack):
    card = build_scorecard(digits_setup, run_method(digits_setup, load_method("finetune"), {}, 0), loss_attack)
    hist = card.entropy_histograms
    assert len(hist["bin_edges"]) == 21
    for key in ("original", "gold", "unlearned"):
        assert sum(hist[key]) == len(digits_setup.forget)
    assert hist["bin_edges"][-1] == pytest.approx(np.log(10))


def test_label_flip_poisoning_task(cache_dir, loss_attack):
    """D_f carries flipped labels, the original learns them, the gold model never sees them."""
    from muaudit.task import NAMED_TASKS

    setup = tiny_setup(cache_dir, "digits-poison", gold_count=2)
    task = setup.task
    assert len(task.poison_labels) == len(task.forget_indices) == 60
    assert set(task.poison_labels) == {8}
    assert set(setup.data.train.y[list(task.forget_indices)].tolist()) == {3}  # the clean labels
    assert set(setup.forget.y.tolist()) == {8}
    assert 8 not in setup.retain.y[setup.retain.y == 3].tolist()
    card = build_scorecard(setup, run_method(setup, load_method("retrain"), {}, 0), loss_attack)
    clean = card.readout("forget_clean_error")
    assert clean.original > clean.gold + 20  # poisoning hurt the original on its true labels
    assert card.readout("test_error").original > card.readout("test_error").gold
    assert task.to_dict()["poison_labels"] == list(task.poison_labels)
    assert NAMED_TASKS["digits-poison"].forget.kind == "label-flip"


# ------------------------------------------------------------------------------------------ AvgGap (issue 12)
@pytest.mark.parametrize("task", ["digits", "digits-class"])
def test_avg_gap_readouts_follow_natmu_paper_and_code(cache_dir, task):
    """``avg_gap``: the paper's terms (RA = test accuracy on retained classes, FA, FATest for class removal only,
    MIA from entropy-lr); ``avg_gap_code``: the code's four terms. Recomputed here independently with NumPy."""
    setup = tiny_setup(cache_dir, task, gold_count=2)
    run = run_method(setup, load_method("finetune"), {}, 0)
    attacks = [load_by_name(ATTACKS, "loss"), load_by_name(ATTACKS, "entropy-lr")]
    card = build_scorecard(setup, run, attacks)
    entropy = card.attacks[1]
    assert entropy.name == "entropy-lr"

    def pct(logits, labels) -> float:
        return 100.0 * float(np.mean(logits.numpy().argmax(1) == labels.numpy()))

    def terms(model, member_rate):
        o = setup.outputs(model)
        forgotten = ~np.isin(o.test_labels.numpy(), np.unique(setup.retain.y.numpy()))
        paper = [pct(o.test_logits[~forgotten], o.test_labels[~forgotten]), pct(o.forget_logits, o.forget_labels)]
        if forgotten.any():
            paper.append(pct(o.test_logits[forgotten], o.test_labels[forgotten]))
        paper.append(100 * member_rate)
        code = [pct(o.test_logits, o.test_labels), pct(o.retain_logits, o.retain_labels),
                pct(o.forget_logits, o.forget_labels), 100 * member_rate]
        return np.array(paper), np.array(code)

    unlearned = terms(run.model, entropy.unlearned["member_rate"])
    gold = terms(setup.golds[0].model, entropy.gold["member_rate"])
    assert len(unlearned[0]) == (4 if task == "digits-class" else 3)
    assert card.readout("avg_gap").unlearned == pytest.approx(np.abs(unlearned[0] - gold[0]).mean(), rel=1e-9)
    assert card.readout("avg_gap_code").unlearned == pytest.approx(np.abs(unlearned[1] - gold[1]).mean(), rel=1e-9)
    assert "MIA from" not in card.readout("avg_gap").description


# ------------------------------------------------------------------------------- method diagnostics (issue 12)
def test_report_validates_diagnostics():
    from muaudit.base import UnlearningMethod
    from muaudit.errors import PluginValidationError

    class Reporter(UnlearningMethod):
        name = "reporter"

        def unlearn(self, model, data, ctx):
            return model

    method = Reporter()
    assert method.diagnostics == {}
    method.report(iterations=np.int64(3), loss=np.float32(0.5), stop="converged", layers=("a", "b"), none=None,
                  flag=True, nested=[[1, 2], [3]])
    assert method.diagnostics == {"iterations": 3, "loss": 0.5, "stop": "converged", "layers": ["a", "b"],
                                  "none": None, "flag": True, "nested": [[1, 2], [3]]}
    assert type(method.diagnostics["iterations"]) is int
    for bad in ({"x": float("nan")}, {"x": float("inf")}, {"x": torch.ones(2)}, {"x": {"a": 1}}, {"x": [object()]}):
        with pytest.raises(PluginValidationError, match="reporter"):
            method.report(**bad)
    with pytest.raises(PluginValidationError, match="identifier"):
        method.report(**{"not an identifier": 1})


def test_diagnostics_reach_the_scorecard_and_the_comparison(digits_class_setup, loss_attack):
    from muaudit.results import comparison_table

    pgu = run_method(digits_class_setup, load_method("pgu"), {}, seed=0)
    finetune = run_method(digits_class_setup, load_method("finetune"), {}, seed=0)
    assert pgu.diagnostics["stop_reason"] == "forget-at-chance" and finetune.diagnostics == {}
    cards = [build_scorecard(digits_class_setup, run, loss_attack) for run in (pgu, finetune)]
    raw = json.loads(cards[0].to_json())
    assert raw["method"]["diagnostics"] == pgu.diagnostics
    again = Scorecard.from_dict(raw)
    assert again.diagnostics == pgu.diagnostics
    assert "stop_reason: forget-at-chance" in cards[0].to_text()
    assert "| stop_reason | forget-at-chance |" in cards[0].to_markdown()
    assert "diagnostics" not in cards[1].to_text()
    table = comparison_table(cards)
    assert "| diagnostic: stop_reason | forget-at-chance | - | - | - |" in table
    assert f"| diagnostic: epochs_trained | {pgu.diagnostics['epochs_trained']} | - | - | - |" in table
    old = {**raw, "schema_version": "1.2", "method": {k: v for k, v in raw["method"].items() if k != "diagnostics"}}
    assert Scorecard.from_dict(old).diagnostics == {}


def test_diagnostics_are_per_run(digits_setup):
    """A method instance reused for a second run starts with empty diagnostics (the wrapper clears them)."""
    from muaudit.audit import method_context
    from muaudit.base import MethodData
    from muaudit_methods.mu_mis import MUMis

    method = MUMis(preset="digits")
    ctx = method_context(digits_setup, 0, None)
    data = MethodData("mu-mis", digits_setup.forget)
    method.report(stale=1)
    method.unlearn(copy.deepcopy(digits_setup.original), data, ctx)
    assert "stale" not in method.diagnostics
    assert method.diagnostics["iterations"] == method.last_iterations
    assert method.diagnostics["stop_reason"] in ("delta", "max-iters")
