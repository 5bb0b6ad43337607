"""Streisand verdicts and metric intervals: known answers, oracles, and end-to-end directions on digits."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from muaudit import metrics as M
from muaudit import verdicts as V
from muaudit.audit import build_scorecard, run_method
from muaudit.plugins import ATTACKS, load_by_name
from muaudit.results import Scorecard
from muaudit.testing import load_method, tiny_setup


# ------------------------------------------------------------------------------------- decision rule
@pytest.mark.parametrize("interval,side,expected", [
    ((0.10, 0.20), "lower", V.OVER),      # entirely below the band, lower = forgot more
    ((0.10, 0.20), "higher", V.UNDER),
    ((0.80, 0.90), "lower", V.UNDER),
    ((0.80, 0.90), "higher", V.OVER),
    ((0.30, 0.45), "lower", V.ALIGNED),   # touches the band
    ((0.10, 0.90), "lower", V.ALIGNED),   # straddles it: not significant
    ((0.40, 0.60), "higher", V.ALIGNED),
])
def test_decide_is_two_sided(interval, side, expected):
    assert V.decide(interval, (0.4, 0.6), side) == expected


def test_decide_rejects_unknown_side():
    with pytest.raises(ValueError):
        V.decide((0, 1), (0, 1), "sideways")


def test_gold_band_is_the_gold_range_widened_by_twice_itself():
    gold = V.GoldReference((0.90, 0.93, 0.88))
    assert gold.reference == 0.90 and gold.tolerance == pytest.approx(0.10)
    assert gold.band == pytest.approx((0.78, 1.03))
    assert V.GoldReference((0.5,)).band == (0.5, 0.5)
    # the band spans every gold seed, not just the reference one
    assert V.GoldReference((0.62, 0.59, 0.60)).band == pytest.approx((0.53, 0.68))


def test_forget_accuracy_interval_is_clopper_pearson():
    correct = np.array([True] * 37 + [False] * 13)
    verdict = V.forget_accuracy_verdict(correct, [0.5, 0.52], 1.0)
    ci = stats.binomtest(37, 50).proportion_ci(0.95, method="exact")
    assert verdict.interval == pytest.approx((ci.low, ci.high))
    assert verdict.unlearned == pytest.approx(0.74)
    assert verdict.verdict == V.UNDER  # 0.74 [0.60, 0.85] is above the gold band [0.46, 0.56]
    assert V.forget_accuracy_verdict(np.zeros(50, bool), [0.5, 0.52], 1.0).verdict == V.OVER


def test_entropy_direction_follows_original_to_gold():
    rng = np.random.default_rng(0)
    original = rng.normal(0.1, 0.01, 300)
    golds = [rng.normal(0.5, 0.05, 300), rng.normal(0.5, 0.05, 300)]
    past_gold = rng.normal(1.5, 0.05, 300)       # further from the original than gold: over-forgetting
    like_original = rng.normal(0.1, 0.01, 300)
    assert V.forget_entropy_verdict(past_gold, golds, original, 0).verdict == V.OVER
    assert V.forget_entropy_verdict(like_original, golds, original, 0).verdict == V.UNDER
    assert V.forget_entropy_verdict(rng.normal(0.5, 0.05, 300), golds, original, 0).verdict == V.ALIGNED
    # when the original is *more* uncertain than gold, lower entropy is the forgotten side
    flipped = V.forget_entropy_verdict(rng.normal(0.05, 0.01, 300), golds, rng.normal(1.0, 0.01, 300), 0)
    assert flipped.forgotten_side == "lower" and flipped.verdict == V.OVER


def test_summary():
    def v(kind):
        return V.Verdict("c", kind, "", 0.0, 0.0, None, (0, 0), (0, 0), "lower")

    assert V.summary([v(V.ALIGNED), v(V.ALIGNED)]) == V.ALIGNED
    assert V.summary([v(V.ALIGNED), v(V.OVER)]) == V.OVER
    assert V.summary([v(V.UNDER), v(V.ALIGNED)]) == V.UNDER
    assert V.summary([v(V.UNDER), v(V.OVER)]) == "mixed"


# --------------------------------------------------------------------------------------- intervals
def test_bootstrap_auc_statistic_equals_sklearn_with_ties():
    rng = np.random.default_rng(1)
    members, nonmembers = rng.integers(0, 5, 40).astype(float), rng.integers(0, 4, 60).astype(float)
    labels = np.r_[np.ones(40), np.zeros(60)]
    assert float(M._auc_statistic(members, nonmembers)) == pytest.approx(
        roc_auc_score(labels, np.r_[members, nonmembers]), abs=1e-12)


def test_intervals_contain_the_estimates_and_shrink_with_more_data():
    rng = np.random.default_rng(2)

    def widths(n):
        m, nm = rng.normal(0.5, 1, n), rng.normal(0, 1, 4 * n)
        met = M.attack_metrics(m, nm, 0.25)
        ci = M.confidence_intervals(m, nm, met.threshold, seed=0)
        for key in ("auc", "balanced_accuracy", "member_rate", "tpr_at_1pct_fpr"):
            low, high = getattr(ci, key)
            assert low <= getattr(met, key) <= high, key
        return ci.auc[1] - ci.auc[0]

    assert widths(1000) < widths(60)


def test_member_rate_interval_and_missing_tpr_interval():
    members, nonmembers = np.arange(10.0), np.arange(20.0)
    ci = M.confidence_intervals(members, nonmembers, threshold=6.5, seed=0)
    exact = stats.binomtest(3, 10).proportion_ci(0.95, method="exact")
    assert ci.member_rate == pytest.approx((exact.low, exact.high))
    assert ci.tpr_at_1pct_fpr is None  # 20 non-members cannot resolve 1% FPR


def test_intervals_are_seeded():
    rng = np.random.default_rng(3)
    m, nm = rng.normal(0.3, 1, 200), rng.normal(0, 1, 300)
    assert M.confidence_intervals(m, nm, 0.0, seed=4) == M.confidence_intervals(m, nm, 0.0, seed=4)


def test_roc_summary_samples_the_step_curve_exactly():
    rng = np.random.default_rng(5)
    m, nm = rng.normal(1, 1, 300), rng.normal(0, 1, 2000)
    summary = M.roc_summary(m, nm, max_points=50)
    assert len(summary["fpr"]) <= 50 and summary["fpr"][0] == 0.0 and summary["fpr"][-1] == pytest.approx(1.0)
    fprs, tprs, _ = roc_curve(np.r_[np.ones(300), np.zeros(2000)], np.r_[m, nm], drop_intermediate=False)
    for f, t in zip(summary["fpr"], summary["tpr"]):
        assert t == pytest.approx(tprs[fprs <= f + 1e-12].max())
    assert np.all(np.diff(summary["tpr"]) >= 0)


# -------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def loss_attack():
    return load_by_name(ATTACKS, "loss")


@pytest.fixture(scope="module")
def four_gold_setup(cache_dir):
    return tiny_setup(cache_dir, "digits", gold_count=4)


def _verdicts(card: Scorecard) -> dict[str, str]:
    return {v.check: v.verdict for v in card.verdicts}


def test_retrain_is_aligned(four_gold_setup, loss_attack):
    card = build_scorecard(four_gold_setup, run_method(four_gold_setup, load_method("retrain"), {}, 0), loss_attack)
    assert set(_verdicts(card)) == {"forget_accuracy", "forget_loss", "forget_entropy", "attack_auc:loss",
                                    "member_rate:loss"}
    assert card.verdict_summary == V.ALIGNED, card.to_text()


def test_aggressive_gradient_ascent_over_forgets_a_random_subset(four_gold_setup, loss_attack):
    """The Streisand effect: driving forget accuracy far below the gold model's (~95%) on a random subset."""
    run = run_method(four_gold_setup, load_method("neggrad"), {"lr": 0.1, "epochs": 30, "max_loss": 3.0}, 0)
    card = build_scorecard(four_gold_setup, run, loss_attack)
    assert _verdicts(card)["forget_accuracy"] == V.OVER
    assert card.verdict_summary == V.OVER


def test_salun_random_labels_push_entropy_past_gold(four_gold_setup, loss_attack):
    """SalUn-style random labels leave D_f far more uncertain than the gold model is (digits, random subset)."""
    run = run_method(four_gold_setup, load_method("random-label"), {"preset": "paper", "variant": "salun", "epochs": 5},
                     0)
    card = build_scorecard(four_gold_setup, run, loss_attack)
    assert _verdicts(card)["forget_entropy"] == V.OVER


def test_doing_nothing_under_forgets_a_class(digits_class_setup, loss_attack):
    card = build_scorecard(digits_class_setup, _identity_run(digits_class_setup), loss_attack)
    verdicts = _verdicts(card)
    assert verdicts["forget_accuracy"] == V.UNDER
    assert verdicts["forget_entropy"] == V.UNDER
    assert card.verdict_summary == V.UNDER


def _identity_run(setup):
    """The example plugin's ``weight-shrink`` with factor 0: the original model, unchanged."""
    from muaudit.plugins import METHODS

    return run_method(setup, load_by_name(METHODS, "weight-shrink"), {"factor": 0.0}, 0)


def test_verdicts_survive_json(four_gold_setup, loss_attack):
    card = build_scorecard(four_gold_setup, run_method(four_gold_setup, load_method("finetune"), {}, 0), loss_attack)
    again = Scorecard.from_dict(json.loads(card.to_json()))
    assert again.verdicts == card.verdicts and again.verdict_summary == card.verdict_summary
    assert "Streisand checks" in card.to_text() and "Streisand checks" in card.to_markdown()
    report = json.loads(card.to_json())["attacks"][0]
    assert set(report["roc"]) == {"unlearned", "original", "gold"}
    assert len(report["golds"]) == 4 and "intervals" in report["unlearned"]
    exposed = report["unlearned"]["most_exposed"]
    assert len(exposed) == 10 and [e["score"] for e in exposed] == sorted((e["score"] for e in exposed), reverse=True)
    assert all(0 <= e["forget_position"] < len(four_gold_setup.forget) for e in exposed)
    low, high = report["unlearned"]["intervals"]["advantage"]
    assert low <= report["unlearned"]["advantage"] <= high
