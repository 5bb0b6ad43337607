"""The loss-threshold attack (Yeom et al.): orientation, null behaviour, exact split/threshold, settings.

Independent references: ``torch.nn.functional.cross_entropy`` (float64) for the signal, a closed form for
crafted logits, a brute-force max-balanced-accuracy threshold, and a Mann-Whitney pairwise AUC.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from muaudit.base import AttackContext, AttackScores, ModelOutputs
from muaudit.metrics import attack_metrics
from muaudit_attacks.loss import LossThresholdAttack, negative_loss


def o_auc(members, nonmembers) -> float:
    m, n = np.asarray(members)[:, None], np.asarray(nonmembers)[None, :]
    return float(((m > n).sum() + 0.5 * (m == n).sum()) / (m.size * n.size))


def o_best_threshold(members, nonmembers) -> float:
    """Highest score value maximising balanced accuracy of "score >= t is member"."""
    best, best_t = -1.0, None
    for t in sorted(set(np.concatenate([members, nonmembers]).tolist()), reverse=True):
        bacc = (np.mean(members >= t) + 1.0 - np.mean(nonmembers >= t)) / 2.0
        if bacc > best + 1e-12:
            best, best_t = bacc, t
    return best_t


def o_neg_ce(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    return -F.cross_entropy(logits.double(), labels.long(), reduction="none").numpy()


def synthetic(n: int, k: int, margin: float, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian logits with ``margin`` added on the label's class (labels uniform)."""
    labels = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k)) * 2.0
    logits[np.arange(n), labels] += margin
    return torch.from_numpy(logits.astype(np.float32)), torch.from_numpy(labels)


# --------------------------------------------------------------------------------------------- signal
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_negative_loss_is_minus_cross_entropy(dtype):
    rng = np.random.default_rng(0)
    logits, labels = synthetic(300, 10, 3.0, rng)
    logits = logits.to(dtype)
    expected = o_neg_ce(logits, labels)
    got = negative_loss(logits, labels)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(negative_loss(logits.numpy(), labels.numpy()), expected, rtol=1e-12, atol=1e-12)
    assert np.all(got <= 0.0)


def test_negative_loss_extreme_logits():
    logits = torch.tensor([[50.0, -50.0, 0.0], [-50.0, 50.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 2])
    got = negative_loss(logits, labels)
    np.testing.assert_allclose(got, o_neg_ce(logits, labels), rtol=1e-12, atol=1e-30)
    assert got[1] == pytest.approx(-100.0, rel=1e-12)  # confidently wrong: loss ~ 100 nats, finite
    assert got[2] == pytest.approx(-math.log(3.0), rel=1e-15)


def test_negative_loss_accepts_grad_and_bfloat16_tensors():
    """Regression: np.asarray refused tensors that require grad and bfloat16 tensors."""
    logits = torch.randn(6, 4, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    np.testing.assert_allclose(negative_loss(logits, labels), o_neg_ce(logits.detach(), labels), rtol=1e-12)
    half = logits.detach().bfloat16()
    np.testing.assert_allclose(negative_loss(half, labels), o_neg_ce(half.double(), labels), rtol=1e-12)


# ---------------------------------------------------------------------------------------- orientation
def test_orientation_members_with_low_loss_score_higher():
    rng = np.random.default_rng(1)
    forget = synthetic(400, 10, 10.0, rng)   # confidently correct: low loss (members)
    retain = synthetic(800, 10, 10.0, rng)
    test = synthetic(800, 10, 0.0, rng)      # no signal on the label: high loss (non-members)
    outputs = ModelOutputs(*forget, *retain, *test)
    scores = LossThresholdAttack().score(outputs, AttackContext("loss", 3))
    assert isinstance(scores, AttackScores)
    np.testing.assert_allclose(scores.members, o_neg_ce(*forget), rtol=1e-12, atol=1e-12)
    assert scores.members.mean() > scores.nonmembers.mean()
    metrics = attack_metrics(scores.members, scores.nonmembers, scores.threshold)
    assert metrics.auc > 0.97
    assert metrics.auc == pytest.approx(o_auc(scores.members, scores.nonmembers), abs=1e-12)
    assert metrics.member_rate > 0.9 and metrics.balanced_accuracy > 0.9
    # reversing the roles (members = high loss) must flip the AUC below 0.5
    flipped = LossThresholdAttack().score(ModelOutputs(*test, *retain, *forget), AttackContext("loss", 3))
    assert attack_metrics(flipped.members, flipped.nonmembers, None).auc < 0.05


# ----------------------------------------------------------------------------------------------- null
@pytest.mark.parametrize("data_seed", [10, 11, 12])
def test_null_same_distribution_gives_chance_auc(data_seed):
    rng = np.random.default_rng(data_seed)
    forget, retain, test = (synthetic(n, 10, 1.5, rng) for n in (2000, 3000, 4000))
    scores = LossThresholdAttack().score(ModelOutputs(*forget, *retain, *test), AttackContext("loss", data_seed))
    n1, n2 = len(scores.members), len(scores.nonmembers)
    assert (n1, n2) == (2000, 2000)
    auc = attack_metrics(scores.members, scores.nonmembers, scores.threshold).auc
    se0 = math.sqrt((n1 + n2 + 1) / (12.0 * n1 * n2))  # null standard error of the Mann-Whitney AUC (~0.009)
    assert abs(auc - 0.5) < min(0.06, 4.5 * se0)
    m = attack_metrics(scores.members, scores.nonmembers, scores.threshold)
    assert abs(m.balanced_accuracy - 0.5) < 0.05


# -------------------------------------------------------------------------------------- known answer
def crafted_outputs() -> tuple[ModelOutputs, dict[str, np.ndarray]]:
    """3 classes; a row with margin d on its label and 0 elsewhere has -CE = -log(1 + 2 exp(-d))."""
    def rows(margins, labels):
        logits = np.zeros((len(margins), 3))
        logits[np.arange(len(margins)), labels] = margins
        return torch.tensor(logits, dtype=torch.float64), torch.tensor(labels)

    d = {"forget": np.array([5.0, 0.0]), "retain": np.array([4.0, 3.0, 2.5, 1.0]),
         "test": np.array([-1.0, 0.5, 2.0, 3.5, -2.0, 1.5])}
    labels = {"forget": [2, 0], "retain": [0, 1, 2, 1], "test": [1, 2, 0, 0, 2, 1]}
    outputs = ModelOutputs(*rows(d["forget"], labels["forget"]), *rows(d["retain"], labels["retain"]),
                           *rows(d["test"], labels["test"]))
    closed_form = {k: -np.log1p(2.0 * np.exp(-v)) for k, v in d.items()}
    return outputs, closed_form


def test_known_answer_split_threshold_and_scores():
    outputs, cf = crafted_outputs()
    seed = 0
    order = np.random.default_rng(seed).permutation(6)
    np.testing.assert_array_equal(order, [3, 2, 5, 4, 0, 1])  # fit half {3, 2, 5}, eval half {4, 0, 1}
    scores = LossThresholdAttack().score(outputs, AttackContext("loss", seed))

    # members: the forget set, in order; non-members: test examples 4, 0, 1 in that order
    np.testing.assert_allclose(scores.members, cf["forget"], rtol=1e-14)
    np.testing.assert_allclose(scores.nonmembers, cf["test"][[4, 0, 1]], rtol=1e-14)

    # threshold: retain margins {4, 3, 2.5, 1} vs fit-half test margins {3.5, 2, 1.5}; balanced accuracy
    #   t=d4: (1/4 + 1)/2 = .625 | t=d3.5: (1/4 + 2/3)/2 | t=d3: (2/4 + 2/3)/2 | t=d2.5: (3/4 + 2/3)/2 = .708 (max)
    #   t=d2: (3/4 + 1/3)/2 | t=d1.5: 3/8 | t=d1: .5   ->   the threshold is the score at margin 2.5
    assert scores.threshold == pytest.approx(-math.log1p(2.0 * math.exp(-2.5)), rel=1e-14)
    assert scores.threshold == negative_loss(outputs.retain_logits, outputs.retain_labels)[2]
    assert scores.threshold == pytest.approx(o_best_threshold(cf["retain"], cf["test"][[3, 2, 5]]), rel=1e-14)

    m = attack_metrics(scores.members, scores.nonmembers, scores.threshold)
    assert m.threshold_source == "attack"
    assert m.member_rate == 0.5           # margin 5 is above, margin 0 below
    assert m.auc == pytest.approx(5 / 6)  # margin 5 beats all three, margin 0 beats margins -2 and -1
    assert m.balanced_accuracy == pytest.approx((0.5 + 1.0) / 2)


@pytest.mark.parametrize("seed", [1, 7, 123])
def test_split_follows_seeded_permutation(seed):
    """Identifiable test scores (all distinct) reveal exactly which examples form each half."""
    rng = np.random.default_rng(99)
    test = synthetic(11, 5, 1.0, rng)  # odd size: fit half gets floor(11/2) = 5
    retain = synthetic(20, 5, 3.0, rng)
    forget = synthetic(4, 5, 3.0, rng)
    outputs = ModelOutputs(*forget, *retain, *test)
    test_scores = o_neg_ce(*test)
    assert len(set(test_scores.tolist())) == 11
    order = np.random.default_rng(seed).permutation(11)
    fit_idx, eval_idx = order[:5], order[5:]
    scores = LossThresholdAttack().score(outputs, AttackContext("loss", seed))
    np.testing.assert_allclose(scores.nonmembers, test_scores[eval_idx], rtol=1e-12)
    expected_t = o_best_threshold(o_neg_ce(*retain), test_scores[fit_idx])
    assert scores.threshold == pytest.approx(expected_t, rel=1e-12)
    again = LossThresholdAttack().score(outputs, AttackContext("loss", seed))
    np.testing.assert_array_equal(again.nonmembers, scores.nonmembers)
    assert again.threshold == scores.threshold


def test_settings_record_the_knobs():
    outputs, _ = crafted_outputs()
    settings = LossThresholdAttack().score(outputs, AttackContext("loss", 5)).settings
    assert settings["split_seed"] == 5
    assert settings["signal"] == "-cross-entropy (float64)"
    assert settings["fit_members"] == "D_r (4)"
    assert settings["fit_nonmembers"] == "random half of test (3)"
    assert settings["eval_nonmembers"] == "other half of test (3)"
    assert "balanced accuracy" in settings["threshold_rule"]
    assert LossThresholdAttack.name == "loss" and "Yeom" in LossThresholdAttack.paper
