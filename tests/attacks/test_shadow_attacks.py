"""Shadow-model attacks (shadow-xgb, lira, ulira) and the challenge readout, end to end on the digits task.

Shadow counts are small (digits MLPs, vectorised): orientation, null and the U-LiRA anchors (exact retraining is at
chance, doing nothing is not) are checked with the attacks' own confidence intervals.
"""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from muaudit.audit import build_scorecard, run_attack, run_method
from muaudit.base import AttackContext
from muaudit.errors import ParameterError, UndeclaredDataError
from muaudit.plugins import ATTACKS, METHODS, load_by_name
from muaudit.testing import load_method
from muaudit_attacks.lira import matched_candidates
from muaudit_attacks.shadow_xgb import max_f1_threshold, shadow_features, split_models


# ------------------------------------------------------------------------------------------ pieces
def test_shadow_features_are_softmax_and_one_hot():
    logits = np.array([[[0.0, np.log(3.0)], [2.0, 2.0]]])  # (1 model, 2 examples, 2 classes)
    feats = shadow_features(logits, np.array([1, 0]), 2)
    np.testing.assert_allclose(feats, [[[0.25, 0.75, 0, 1], [0.5, 0.5, 1, 0]]])


def test_models_are_split_by_index_like_the_paper():
    train, val, test = split_models(50, 0.8, 0.1)
    assert (len(train), len(val), len(test)) == (40, 5, 5)
    assert set(train) | set(val) | set(test) == set(range(50))
    with pytest.raises(ValueError):
        split_models(2, 0.8, 0.1)


def test_max_f1_threshold_against_brute_force():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = rng.normal(labels * 0.8, 1.0)
    best = max(np.unique(scores), key=lambda t: (f1_score(labels, scores >= t), t))
    chosen = max_f1_threshold(labels, scores)
    assert f1_score(labels, scores >= chosen) == pytest.approx(f1_score(labels, scores >= best))


def test_candidates_are_class_matched_and_balanced():
    forget = np.array([0, 0, 0, 1, 1, 2])
    test = np.array([0, 1, 1, 1, 1, 0, 3])
    f, t = matched_candidates(forget, test, None, seed=0)
    assert len(f) == len(t) == 4  # class 0: 2 test examples; class 1: 2 forget examples; class 2: none held out
    assert sorted(forget[f]) == sorted(test[t])
    f2, t2 = matched_candidates(forget, test, 2, seed=0)
    assert len(f2) == len(t2) == 2 and sorted(forget[f2]) == sorted(test[t2])


def test_shadow_attacks_refuse_a_context_without_the_bank(digits_setup):
    plugin = load_by_name(ATTACKS, "lira")
    ctx = AttackContext("lira", 0)  # stand-alone: nothing declared, nothing provided
    with pytest.raises(UndeclaredDataError, match="did not declare"):
        plugin.cls().score(digits_setup.outputs(digits_setup.original), ctx)
    ctx = AttackContext("lira", 0, needs=frozenset({"shadows"}))
    with pytest.raises(UndeclaredDataError, match="does not provide"):
        plugin.cls().score(digits_setup.outputs(digits_setup.original), ctx)


def test_lira_needs_an_even_number_of_shadows():
    with pytest.raises(ParameterError, match="must be even"):
        load_by_name(ATTACKS, "lira").cls(n_shadows=7)


# ------------------------------------------------------------------------------------------ end to end
def _contains(interval, value):
    return interval[0] <= value <= interval[1]


@pytest.fixture(scope="module")
def retrain_run(digits_setup):
    return run_method(digits_setup, load_method("retrain"), {}, 0)


@pytest.fixture(scope="module")
def identity_run(digits_setup):
    """The example plugin's ``weight-shrink`` with factor 0: the method that does nothing."""
    return run_method(digits_setup, load_by_name(METHODS, "weight-shrink"), {"factor": 0.0}, 0)


def test_shadow_xgb_orientation_and_null(digits_setup, retrain_run):
    res = run_attack(digits_setup, load_by_name(ATTACKS, "shadow-xgb"), retrain_run)
    # orientation: the original (trained on D_f) is recognised against held-out gold shadows
    assert res.original.metrics.auc > 0.8
    # null: a retrained model is one more gold draw, not a member
    assert res.unlearned.metrics.auc < res.original.metrics.auc - 0.2
    assert res.unlearned.settings["split_models"] == [40, 5, 5]
    assert res.unlearned.metrics.n_nonmembers == 5 * len(digits_setup.forget)
    for gold in res.golds:  # the audit's gold models are gold draws too
        assert gold.intervals.auc[0] < 0.5 + 0.1 and gold.metrics.auc < res.original.metrics.auc - 0.2


def test_lira_orientation_and_null(digits_setup, retrain_run):
    res = run_attack(digits_setup, load_by_name(ATTACKS, "lira"), retrain_run)
    assert res.original.metrics.auc > 0.6 and res.original.intervals.auc[0] > 0.5  # members score higher
    assert _contains(res.unlearned.intervals.auc, 0.5)  # retrained: D_f never seen
    assert res.unlearned.settings["in_per_example"] == res.unlearned.settings["out_per_example"] == 8
    assert res.unlearned.settings["n_eval_forget"] == res.unlearned.settings["n_eval_heldout"]


def test_ulira_is_at_chance_for_exact_retraining(digits_setup, retrain_run):
    res = run_attack(digits_setup, load_by_name(ATTACKS, "ulira"), retrain_run, {"n_shadows": 8})
    assert _contains(res.unlearned.intervals.auc, 0.5), res.unlearned.metrics.auc
    assert res.unlearned.settings["method"]["method"].endswith("retrain")


def test_ulira_is_above_chance_for_a_method_that_does_nothing(digits_setup, identity_run):
    res = run_attack(digits_setup, load_by_name(ATTACKS, "ulira"), identity_run, {"n_shadows": 8})
    assert res.unlearned.metrics.auc > 0.58 and res.unlearned.intervals.auc[0] > 0.5, res.unlearned.metrics.auc


def test_shadow_models_are_reused_across_attacks(digits_setup, retrain_run):
    """lira and ulira share the bank's half-models: the second attack trains nothing new for them."""
    from muaudit.audit import shadow_bank

    bank = shadow_bank(digits_setup)
    run_attack(digits_setup, load_by_name(ATTACKS, "lira"), retrain_run)
    before = bank.n_trained
    run_attack(digits_setup, load_by_name(ATTACKS, "lira"), retrain_run, {"mode": "offline"})
    assert bank.n_trained == before


def test_challenge_readout_orders_retrain_above_doing_nothing(digits_setup, retrain_run, identity_run):
    loss = load_by_name(ATTACKS, "loss")
    good = build_scorecard(digits_setup, retrain_run, loss, challenge_models=4)
    bad = build_scorecard(digits_setup, identity_run, loss, challenge_models=4)
    f_good = good.readout("challenge_forgetting_quality")
    f_bad = bad.readout("challenge_forgetting_quality")
    assert f_bad.unlearned < f_good.unlearned
    assert good.challenge["unlearned"]["n_unlearned"] == 4
    assert good.challenge["gold_vs_gold"]["n_gold"] == 4
    assert any("models per side" in n for n in good.challenge["unlearned"]["notes"])
