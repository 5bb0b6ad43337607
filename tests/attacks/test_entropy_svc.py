"""``entropy-svc`` (SalUn's SVC MIA on Song & Mittal features): known answer, split/cap recipe, orientation, null,
settings, parameters, entry point and a digits model.

Independent references: a plain ``SVC(C=3, gamma="auto", kernel="rbf")`` fit on crafted features, the documented
sampling recipe written out, a Mann-Whitney null standard error. SalUn's own logic is re-implemented in
``test_published_definitions.py``.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.svm import SVC

from muaudit.base import AttackContext, AttackScores, ModelOutputs
from muaudit.errors import ParameterError
from muaudit.metrics import attack_metrics
from muaudit.plugins import ATTACKS, load_by_name
from muaudit_attacks.entropy_svc import DEFAULT_MAX_FIT, FEATURES, EntropySVCAttack, shadow_indices


def synthetic(n: int, k: int, margin: float, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian logits with ``margin`` added on the label's class (labels uniform)."""
    labels = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k)) * 2.0
    logits[np.arange(n), labels] += margin
    return torch.from_numpy(logits), torch.from_numpy(labels)


def rows(margins: list[float], labels: list[int], k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    logits = np.zeros((len(margins), k))
    logits[np.arange(len(margins)), labels] = margins
    return torch.tensor(logits, dtype=torch.float64), torch.tensor(labels)


# -------------------------------------------------------------------------------------- known answer
def crafted() -> ModelOutputs:
    """K=3. Retain: 10 identical confident rows (margin 6 on the label); test: 8 uniform rows whose label is not
    the arg-max (0), so incorrect; forget: 2 confident rows and 1 uniform row. Every feature separates."""
    return ModelOutputs(*rows([6.0, 6.0, 0.0], [0, 0, 1]), *rows([6.0] * 10, [0] * 10),
                        *rows([0.0] * 8, [1, 2] * 4))


@pytest.mark.parametrize("feature", FEATURES)
def test_known_answer_scores_and_metrics(feature):
    scores = EntropySVCAttack(feature=feature).score(crafted(), AttackContext("entropy-svc", 0))
    p_conf = math.exp(6.0) / (math.exp(6.0) + 2.0)
    value = {  # (confident row, uniform row) feature values in closed form
        "correctness": ([1.0], [0.0]), "confidence": ([p_conf], [1 / 3]),
        "entropy": ([-p_conf * math.log(p_conf) - 2 * (1 - p_conf) / 2 * math.log((1 - p_conf) / 2)],
                    [math.log(3.0)]),
        "prob": ([p_conf, (1 - p_conf) / 2, (1 - p_conf) / 2], [1 / 3] * 3),
    }
    # 4 "in" rows (min(10, 8 // 2)) and 4 "out" rows, all identical within a side
    if feature in value:
        c, u = (np.array(v)[None, :] for v in value[feature])
        plain = SVC(C=3, gamma="auto", kernel="rbf").fit(np.r_[c, c, c, c, u, u, u, u], [1] * 4 + [0] * 4)
        d_c, d_u = plain.decision_function(c)[0], plain.decision_function(u)[0]
        np.testing.assert_allclose(scores.members, [d_c, d_c, d_u], rtol=1e-7)
        np.testing.assert_allclose(scores.nonmembers, [d_u] * 4, rtol=1e-7)
    assert scores.members[0] > 0 > scores.members[2]
    assert scores.threshold == 0.0
    m = attack_metrics(scores.members, scores.nonmembers, scores.threshold)
    assert m.member_rate == pytest.approx(2 / 3)
    assert m.auc == pytest.approx(5 / 6)            # 2 beat all 4 non-members, 1 ties with all 4
    assert m.balanced_accuracy == pytest.approx((2 / 3 + 1) / 2)
    s = scores.settings
    assert s["feature"] == feature
    assert s["mia_efficacy"] == pytest.approx(1 / 3)
    assert s["member_rate_by_feature"] == pytest.approx({f: 2 / 3 for f in FEATURES})
    assert s["fit_members"] == "seeded random subset of D_r (4 of 10)"
    assert s["fit_nonmembers"] == "random half of test (4)" and s["eval_nonmembers"] == "other half of test (4)"


def test_member_rate_equals_one_minus_mia_efficacy_for_every_feature():
    """threshold 0 on decision_function is exactly SVC.predict (SalUn's MIA-efficacy), feature by feature."""
    rng = np.random.default_rng(5)
    outputs = ModelOutputs(*synthetic(300, 5, 4.0, rng), *synthetic(600, 5, 5.0, rng), *synthetic(500, 5, 3.0, rng))
    for feature in FEATURES:
        scores = EntropySVCAttack(feature=feature).score(outputs, AttackContext("entropy-svc", 3))
        m = attack_metrics(scores.members, scores.nonmembers, scores.threshold)
        assert m.member_rate == scores.settings["member_rate_by_feature"][feature]
        assert scores.settings["mia_efficacy"] == 1.0 - m.member_rate


def test_svc_tie_is_predicted_member_as_threshold_zero_says():
    """At an exact tie (decision_function = -0.0) SVC.predict gives classes_[1]; ``-0.0 >= 0`` agrees."""
    for x, y in (([[-1.0], [1.0]], [0, 1]), ([[1.0], [-1.0]], [0, 1])):
        clf = SVC(C=3, gamma="auto", kernel="rbf").fit(x, y)
        d = clf.decision_function([[0.0]])
        assert d[0] == 0.0 and clf.predict([[0.0]])[0] == 1 and bool(d[0] >= 0.0)


# ------------------------------------------------------------------------------------- sampling recipe
@pytest.mark.parametrize("n_retain,n_test,cap", [(100, 41, None), (10, 41, None), (100, 41, 7), (5, 3, 1)])
def test_shadow_indices_follow_the_documented_recipe(n_retain, n_test, cap):
    seed = 11
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_test)
    fit_out, held = order[: n_test // 2], order[n_test // 2:]
    fit_in = rng.choice(n_retain, size=min(n_retain, n_test // 2), replace=False)
    if cap is not None:
        fit_in, fit_out = fit_in[:cap], fit_out[:cap]
    got = shadow_indices(n_retain, n_test, seed, cap)
    for a, b in zip(got, (fit_in, fit_out, held)):
        np.testing.assert_array_equal(a, b)
    assert set(got[1]).isdisjoint(got[2]) and len(set(got[0])) == len(got[0])


def test_split_matches_the_loss_attack_and_cap_is_recorded():
    from muaudit_attacks.loss import LossThresholdAttack, negative_loss

    rng = np.random.default_rng(6)
    outputs = ModelOutputs(*synthetic(20, 5, 3.0, rng), *synthetic(300, 5, 3.0, rng), *synthetic(201, 5, 1.0, rng))
    loss = LossThresholdAttack().score(outputs, AttackContext("loss", 9))
    svc = EntropySVCAttack(feature="confidence", max_fit_per_side=50).score(outputs, AttackContext("entropy-svc", 9))
    held = shadow_indices(300, 201, 9, 50)[2]
    np.testing.assert_array_equal(negative_loss(outputs.test_logits, outputs.test_labels)[held], loss.nonmembers)
    assert len(svc.nonmembers) == 101
    assert svc.settings["max_fit_per_side"] == 50
    assert svc.settings["fit_members"] == "seeded random subset of D_r (50 of 300)"
    assert svc.settings["fit_nonmembers"] == "random half of test (50)"
    assert EntropySVCAttack().hparams["max_fit_per_side"] == DEFAULT_MAX_FIT
    assert EntropySVCAttack(max_fit_per_side=None).score(outputs, AttackContext("entropy-svc", 9)
                                                         ).settings["fit_nonmembers"] == "random half of test (100)"


# ---------------------------------------------------------------------------------------- orientation
def test_orientation_confident_members_score_higher():
    rng = np.random.default_rng(1)
    forget = synthetic(400, 10, 12.0, rng)   # confident (members)
    retain = synthetic(800, 10, 12.0, rng)
    test = synthetic(800, 10, 0.0, rng)      # no signal on the label (non-members)
    scores = EntropySVCAttack().score(ModelOutputs(*forget, *retain, *test), AttackContext("entropy-svc", 0))
    assert isinstance(scores, AttackScores)
    assert scores.members.mean() > scores.nonmembers.mean()
    m = attack_metrics(scores.members, scores.nonmembers, scores.threshold)
    assert m.auc > 0.97 and m.member_rate > 0.9 and m.balanced_accuracy > 0.9
    # forget examples less confident than the test split must score below it: AUC << 0.5
    flipped = EntropySVCAttack().score(ModelOutputs(*synthetic(400, 10, 0.0, rng), *retain,
                                                    *synthetic(800, 10, 8.0, rng)), AttackContext("entropy-svc", 0))
    assert attack_metrics(flipped.members, flipped.nonmembers, None).auc < 0.05


# ----------------------------------------------------------------------------------------------- null
@pytest.mark.parametrize("data_seed", [30, 31, 32, 33])
def test_null_same_distribution_gives_chance_auc(data_seed):
    rng = np.random.default_rng(data_seed)
    forget, retain, test = (synthetic(n, 10, 3.0, rng) for n in (1500, 2000, 3000))
    scores = EntropySVCAttack(max_fit_per_side=600).score(ModelOutputs(*forget, *retain, *test),
                                                          AttackContext("entropy-svc", data_seed))
    n1, n2 = len(scores.members), len(scores.nonmembers)
    assert (n1, n2) == (1500, 1500)
    auc = attack_metrics(scores.members, scores.nonmembers, scores.threshold).auc
    se0 = math.sqrt((n1 + n2 + 1) / (12.0 * n1 * n2))  # null standard error of the Mann-Whitney AUC (~0.011)
    assert abs(auc - 0.5) < 4.5 * se0


# ----------------------------------------------------------------------------------- params, validation
def test_parameters_and_input_validation():
    with pytest.raises(ParameterError):
        EntropySVCAttack(feature="loss")
    with pytest.raises(ParameterError):
        EntropySVCAttack(max_fit_per_side=0)
    assert EntropySVCAttack(feature="m_entropy").hparams["feature"] == "m_entropy"
    one = (torch.zeros(1, 3), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2 test"):
        EntropySVCAttack().score(ModelOutputs(*one, *one, *one), AttackContext("entropy-svc", 0))


# ------------------------------------------------------------------------------- entry point, digits
def test_entry_point_scores_a_digits_model(digits_setup):
    plugin = load_by_name(ATTACKS, "entropy-svc")
    assert plugin.cls is EntropySVCAttack and plugin.spec.dist == "muaudit"
    outputs = digits_setup.outputs(digits_setup.original)
    scores = plugin.cls().score(outputs, AttackContext("entropy-svc", 0, "original"))
    n_test = len(outputs.test_labels)
    assert scores.members.shape == (len(outputs.forget_labels),)
    assert scores.nonmembers.shape == (n_test - n_test // 2,)
    assert np.isfinite(scores.members).all() and np.isfinite(scores.nonmembers).all()
    m = attack_metrics(scores.members, scores.nonmembers, scores.threshold)
    assert m.member_rate == scores.settings["member_rate_by_feature"]["confidence"]
    assert scores.settings["mia_efficacy"] == 1.0 - m.member_rate
    assert set(scores.settings["member_rate_by_feature"]) == set(FEATURES)
