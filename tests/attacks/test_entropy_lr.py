"""``entropy-lr`` (Chundawat's entropy MIA): known answer, orientation, null, settings, entry point, digits model.

Independent references: closed-form entropies of crafted logits, a plain scikit-learn fit, a Mann-Whitney null
standard error. The comparison with the published SSD/NatMU code path is in ``test_published_definitions.py``.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from muaudit.base import AttackContext, AttackScores, ModelOutputs
from muaudit.errors import ParameterError
from muaudit.metrics import attack_metrics
from muaudit.plugins import ATTACKS, load_by_name
from muaudit.readouts import entropies
from muaudit_attacks.entropy_lr import MEMBER_THRESHOLD, EntropyLRAttack


def synthetic(n: int, k: int, margin: float, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian logits with ``margin`` added on the label's class (labels uniform)."""
    labels = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k)) * 2.0
    logits[np.arange(n), labels] += margin
    return torch.from_numpy(logits), torch.from_numpy(labels)


def rows(margins: list[float], labels: list[int], k: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    logits = np.zeros((len(margins), k))
    logits[np.arange(len(margins)), labels] = margins
    return torch.tensor(logits, dtype=torch.float64), torch.tensor(labels)


def entropy_of_margin(m: float, k: int = 4) -> float:
    """Entropy of softmax([m, 0, ..., 0]) in closed form."""
    z = math.exp(m) + (k - 1)
    p, q = math.exp(m) / z, 1.0 / z
    return -p * math.log(p) - (k - 1) * q * math.log(q)


# -------------------------------------------------------------------------------------- known answer
def test_known_answer_scores_ratio_and_metrics():
    """Retain: 6 confident rows (margin 8); test: 5 uniform rows; forget: 3 confident + 1 uniform."""
    outputs = ModelOutputs(*rows([8.0, 8.0, 0.0, 8.0], [0, 1, 2, 3]), *rows([8.0] * 6, [0, 1, 2, 3, 0, 1]),
                           *rows([0.0] * 5, [0, 1, 2, 3, 0]))
    scores = EntropyLRAttack().score(outputs, AttackContext("entropy-lr", 0))
    h_conf, h_unif = entropy_of_margin(8.0), math.log(4.0)

    plain = LogisticRegression(class_weight="balanced").fit(np.r_[[h_conf] * 6, [h_unif] * 5].reshape(-1, 1),
                                                             np.r_[np.ones(6), np.zeros(5)])
    w, b = plain.coef_[0, 0], plain.intercept_[0]
    assert w < 0  # low entropy = member
    assert scores.settings["coef"] == pytest.approx(w, rel=1e-9)
    assert scores.settings["intercept"] == pytest.approx(b, rel=1e-9)
    np.testing.assert_allclose(scores.members, w * np.array([h_conf, h_conf, h_unif, h_conf]) + b, rtol=1e-9)
    np.testing.assert_allclose(scores.nonmembers, np.full(5, w * h_unif + b), rtol=1e-9)
    assert scores.threshold == MEMBER_THRESHOLD == np.nextafter(0.0, 1.0)

    m = attack_metrics(scores.members, scores.nonmembers, scores.threshold)
    assert m.member_rate == 0.75 == scores.settings["mia_ratio"]
    assert m.auc == pytest.approx(7 / 8)                      # 3 beat all 5 non-members, 1 ties with all
    assert m.balanced_accuracy == pytest.approx((0.75 + 1.0) / 2)
    assert m.threshold_source == "attack"


def test_threshold_reproduces_predict_exactly():
    """score >= threshold is decision > 0, which is predict == 1, for every example."""
    rng = np.random.default_rng(4)
    outputs = ModelOutputs(*synthetic(3000, 10, 4.0, rng), *synthetic(4000, 10, 5.0, rng),
                           *synthetic(2000, 10, 3.0, rng))
    scores = EntropyLRAttack().score(outputs, AttackContext("entropy-lr", 0))
    x = np.r_[entropies(outputs.retain_logits), entropies(outputs.test_logits)].reshape(-1, 1)
    clf = LogisticRegression(class_weight="balanced").fit(x, np.r_[np.ones(4000), np.zeros(2000)])
    for scored, logits in ((scores.members, outputs.forget_logits), (scores.nonmembers, outputs.test_logits)):
        predicted = clf.predict(entropies(logits).reshape(-1, 1)) == 1
        np.testing.assert_array_equal(scored >= scores.threshold, predicted)
    m = attack_metrics(scores.members, scores.nonmembers, scores.threshold)
    assert m.member_rate == scores.settings["mia_ratio"]


# ---------------------------------------------------------------------------------------- orientation
def test_orientation_confident_members_score_higher():
    rng = np.random.default_rng(1)
    forget = synthetic(400, 10, 12.0, rng)   # confident: low entropy (members)
    retain = synthetic(800, 10, 12.0, rng)
    test = synthetic(800, 10, 0.0, rng)      # no signal: high entropy (non-members)
    scores = EntropyLRAttack().score(ModelOutputs(*forget, *retain, *test), AttackContext("entropy-lr", 0))
    assert isinstance(scores, AttackScores)
    assert scores.settings["coef"] < 0
    assert scores.members.mean() > scores.nonmembers.mean()
    m = attack_metrics(scores.members, scores.nonmembers, scores.threshold)
    assert m.auc > 0.97 and m.member_rate > 0.9 and m.balanced_accuracy > 0.9
    # forget examples less confident than the test split (Streisand-like) must score below it: AUC << 0.5
    flipped = EntropyLRAttack().score(ModelOutputs(*synthetic(400, 10, 0.0, rng), *retain,
                                                   *synthetic(800, 10, 8.0, rng)), AttackContext("entropy-lr", 0))
    assert attack_metrics(flipped.members, flipped.nonmembers, None).auc < 0.05


# ----------------------------------------------------------------------------------------------- null
@pytest.mark.parametrize("data_seed", [20, 21, 22, 23])
def test_null_same_distribution_gives_chance_auc(data_seed):
    rng = np.random.default_rng(data_seed)
    forget, retain, test = (synthetic(n, 10, 3.0, rng) for n in (2000, 3000, 2000))
    scores = EntropyLRAttack().score(ModelOutputs(*forget, *retain, *test), AttackContext("entropy-lr", 0))
    n1, n2 = len(scores.members), len(scores.nonmembers)
    assert (n1, n2) == (2000, 2000)
    auc = attack_metrics(scores.members, scores.nonmembers, scores.threshold).auc
    se0 = math.sqrt((n1 + n2 + 1) / (12.0 * n1 * n2))  # null standard error of the Mann-Whitney AUC (~0.009)
    assert abs(auc - 0.5) < 4.5 * se0


# ------------------------------------------------------------------------------------ settings, params
def test_settings_record_the_knobs_and_seed_is_unused():
    rng = np.random.default_rng(2)
    outputs = ModelOutputs(*synthetic(30, 5, 3.0, rng), *synthetic(70, 5, 3.0, rng), *synthetic(40, 5, 1.0, rng))
    a = EntropyLRAttack().score(outputs, AttackContext("entropy-lr", 1))
    b = EntropyLRAttack().score(outputs, AttackContext("entropy-lr", 2))
    np.testing.assert_array_equal(a.members, b.members)  # deterministic fit, no sampling
    s = a.settings
    assert s["fit_members"] == "all of D_r (70)" and s["fit_nonmembers"] == "all of test (40)"
    assert "in-sample" in s["eval_nonmembers"] and s["C"] == 1.0 and s["seed_used"] is False
    assert "entropy" in s["feature"] and "balanced" in s["classifier"]
    assert len(a.nonmembers) == 40 and len(a.members) == 30


def test_parameters_and_input_validation():
    with pytest.raises(ParameterError):
        EntropyLRAttack(C=0.0)
    with pytest.raises(ParameterError):
        EntropyLRAttack(penalty="l1")
    assert EntropyLRAttack(C=2).hparams["C"] == 2.0
    empty = (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    one = (torch.zeros(1, 3), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="non-empty"):
        EntropyLRAttack().score(ModelOutputs(*one, *empty, *one), AttackContext("entropy-lr", 0))


# ------------------------------------------------------------------------------- entry point, digits
def test_entry_point_scores_a_digits_model(digits_setup):
    plugin = load_by_name(ATTACKS, "entropy-lr")
    assert plugin.cls is EntropyLRAttack and plugin.spec.dist == "muaudit"
    outputs = digits_setup.outputs(digits_setup.original)
    scores = plugin.cls().score(outputs, AttackContext("entropy-lr", 0, "original"))
    assert scores.members.shape == (len(outputs.forget_labels),)
    assert scores.nonmembers.shape == (len(outputs.test_labels),)
    assert np.isfinite(scores.members).all() and np.isfinite(scores.nonmembers).all()
    m = attack_metrics(scores.members, scores.nonmembers, scores.threshold)
    assert m.member_rate == scores.settings["mia_ratio"]
    assert 0.0 <= m.auc <= 1.0
