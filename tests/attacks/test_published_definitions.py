"""muaudit's readouts and population attacks against their published definitions, written out plainly.

- ``entropy-lr`` vs the SSD / NatMU code path (``get_membership_attack_prob``: torch entropy of the softmax,
  ``LogisticRegression(class_weight="balanced")`` on D_r vs test, ``predict(D_f).mean()``), and its ``C=2`` setting
  vs the published ``multi_class="multinomial"`` fit (minimised directly with SciPy).
- ``entropy-svc`` vs SalUn's ``SVC_MIA`` / ``SVC_fit_predict`` (same shadow sets, the correct modified entropy).
- ``activation_distance`` vs SSD's ``actv_dist`` / TMU (per-sample L2 of the softmax difference, then mean).
- the modified entropy vs Song & Mittal's NumPy formula, and closed forms at p_y -> 1 and p_c -> 1.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize
from scipy.special import log_softmax
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

from muaudit.base import AttackContext, ModelOutputs
from muaudit.metrics import attack_metrics
from muaudit.readouts import activation_distance
from muaudit_attacks.entropy_lr import EntropyLRAttack
from muaudit_attacks.entropy_svc import EntropySVCAttack, modified_entropy, shadow_indices


def synthetic(n: int, k: int, margin: float, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    labels = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k)) * 2.0
    logits[np.arange(n), labels] += margin
    return torch.from_numpy(logits), torch.from_numpy(labels)


def synthetic_outputs(seed: int) -> ModelOutputs:
    rng = np.random.default_rng(seed)
    return ModelOutputs(*synthetic(500, 10, 5.0, rng), *synthetic(3000, 10, 6.0, rng),
                        *synthetic(1200, 10, 3.5, rng))


@pytest.fixture(params=["digits-original", "digits-gold", "synthetic"])
def outputs(request) -> ModelOutputs:
    if request.param == "synthetic":
        return synthetic_outputs(0)
    setup = request.getfixturevalue("digits_setup")
    return setup.outputs(setup.original if request.param == "digits-original" else setup.golds[0].model)


# ------------------------------------------------------------------------------ Chundawat / SSD / NatMU
def ssd_entropy(p: torch.Tensor) -> torch.Tensor:
    return -torch.where(p > 0, p * p.log(), p.new([0.0])).sum(dim=-1)


def ssd_mia_ratio(o: ModelOutputs) -> float:
    """SSD ``get_membership_attack_prob`` on precomputed logits (float64 softmax, no batch-size-1 loop)."""
    retain_prob, forget_prob, test_prob = (F.softmax(z.double(), dim=-1)
                                           for z in (o.retain_logits, o.forget_logits, o.test_logits))
    X_r = torch.cat([ssd_entropy(retain_prob), ssd_entropy(test_prob)]).cpu().numpy().reshape(-1, 1)
    Y_r = np.concatenate([np.ones(len(retain_prob)), np.zeros(len(test_prob))])
    X_f = ssd_entropy(forget_prob).cpu().numpy().reshape(-1, 1)
    clf = LogisticRegression(class_weight="balanced", solver="lbfgs")
    clf.fit(X_r, Y_r)
    return clf.predict(X_f).mean()


def test_entropy_lr_equals_the_published_mia_ratio(outputs):
    scores = EntropyLRAttack().score(outputs, AttackContext("entropy-lr", 0))
    expected = ssd_mia_ratio(outputs)
    assert scores.settings["mia_ratio"] == expected
    assert attack_metrics(scores.members, scores.nonmembers, scores.threshold).member_rate == expected


def multinomial_binary_predictions(x_fit: np.ndarray, y_fit: np.ndarray, x_eval: np.ndarray) -> np.ndarray:
    """The published ``LogisticRegression(multi_class="multinomial", class_weight="balanced")`` on two classes:
    softmax over two rows W = (w_0, w_1), b = (b_0, b_1), objective sum_i s_i CE_i + 1/2 |W|^2 (C = 1)."""
    s = np.where(y_fit == 1, len(y_fit) / (2.0 * y_fit.sum()), len(y_fit) / (2.0 * (1 - y_fit).sum()))
    y = y_fit.astype(int)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:2], theta[2:]
        logp = log_softmax(x_fit[:, None] * w[None, :] + b[None, :], axis=1)
        g = np.exp(logp)
        g[np.arange(len(y)), y] -= 1.0
        g *= s[:, None]
        value = -(s * logp[np.arange(len(y)), y]).sum() + 0.5 * (w ** 2).sum()
        return value, np.r_[(g * x_fit[:, None]).sum(0) + w, g.sum(0)]

    res = minimize(objective, np.zeros(4), jac=True, method="L-BFGS-B",
                   options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10000})
    w, b = res.x[:2], res.x[2:]
    return ((x_eval * w[1] + b[1]) > (x_eval * w[0] + b[0])).astype(float)


def test_entropy_lr_with_C2_reproduces_the_published_multinomial_fit():
    o = synthetic_outputs(1)
    retain_prob, forget_prob, test_prob = (F.softmax(z.double(), dim=-1)
                                           for z in (o.retain_logits, o.forget_logits, o.test_logits))
    x_fit = torch.cat([ssd_entropy(retain_prob), ssd_entropy(test_prob)]).numpy()
    y_fit = np.r_[np.ones(len(retain_prob)), np.zeros(len(test_prob))]
    published = multinomial_binary_predictions(x_fit, y_fit, ssd_entropy(forget_prob).numpy()).mean()
    assert EntropyLRAttack(C=2.0).score(o, AttackContext("entropy-lr", 0)).settings["mia_ratio"] == published


# ------------------------------------------------------------------------------------------- SalUn SVC
def song_mittal_m_entropy(probs: np.ndarray, labels: np.ndarray, small: float = 1e-30) -> np.ndarray:
    """Song & Mittal's ``_m_entr_comp`` (inspire-group/membership-inference-evaluation), written plainly."""
    log_probs = -np.log(np.maximum(probs, small))
    reverse_probs = 1 - probs
    log_reverse_probs = -np.log(np.maximum(reverse_probs, small))
    modified_probs = np.copy(probs)
    modified_probs[range(labels.size), labels] = reverse_probs[range(labels.size), labels]
    modified_log_probs = np.copy(log_reverse_probs)
    modified_log_probs[range(labels.size), labels] = log_probs[range(labels.size), labels]
    return np.sum(np.multiply(modified_probs, modified_log_probs), axis=1)


def salun_svc_fit_predict(shadow_train, shadow_test, target_test) -> float:
    """SalUn's ``SVC_fit_predict`` with ``target_train=None`` (the MIA-efficacy call)."""
    n_shadow_train, n_shadow_test, n_target_test = shadow_train.shape[0], shadow_test.shape[0], target_test.shape[0]
    X_shadow = torch.cat([shadow_train, shadow_test]).cpu().numpy().reshape(n_shadow_train + n_shadow_test, -1)
    Y_shadow = np.concatenate([np.ones(n_shadow_train), np.zeros(n_shadow_test)])
    clf = SVC(C=3, gamma="auto", kernel="rbf")
    clf.fit(X_shadow, Y_shadow)
    X_target_test = target_test.cpu().numpy().reshape(n_target_test, -1)
    return 1 - clf.predict(X_target_test).mean()


@pytest.mark.parametrize("feature", ["confidence", "m_entropy"])
def test_entropy_svc_equals_salun_svc_mia(outputs, feature):
    seed, cap = 4, 300
    fit_in, fit_out, _ = shadow_indices(len(outputs.retain_labels), len(outputs.test_labels), seed, cap)
    prob = {k: F.softmax(getattr(outputs, f"{k}_logits").double(), dim=-1) for k in ("retain", "test", "forget")}
    lab = {k: getattr(outputs, f"{k}_labels").long() for k in ("retain", "test", "forget")}
    if feature == "confidence":
        feat = {k: torch.gather(prob[k], 1, lab[k][:, None]) for k in prob}
    else:
        feat = {k: torch.from_numpy(song_mittal_m_entropy(prob[k].numpy(), lab[k].numpy())) for k in prob}
    efficacy = salun_svc_fit_predict(feat["retain"][fit_in], feat["test"][fit_out], feat["forget"])

    scores = EntropySVCAttack(feature=feature, max_fit_per_side=cap).score(outputs, AttackContext("x", seed))
    assert scores.settings["mia_efficacy"] == efficacy
    assert attack_metrics(scores.members, scores.nonmembers, scores.threshold).member_rate == 1 - efficacy


# ------------------------------------------------------------------------------- activation distance
def ssd_actv_dist(a: torch.Tensor, b: torch.Tensor) -> float:
    """SSD ``actv_dist`` (with its missing ``nn`` import dropped) on precomputed logits, in float64."""
    diff = torch.sqrt(torch.sum(torch.square(F.softmax(a.double(), dim=1) - F.softmax(b.double(), dim=1)), axis=1))
    return float(diff.mean())


def test_activation_distance_equals_ssd_actv_dist(digits_setup):
    a = digits_setup.outputs(digits_setup.original).forget_logits
    b = digits_setup.outputs(digits_setup.golds[0].model).forget_logits
    assert activation_distance(a, b) == pytest.approx(ssd_actv_dist(a, b), rel=1e-12)
    rng = np.random.default_rng(3)
    x, y = torch.from_numpy(rng.normal(size=(200, 10)) * 3), torch.from_numpy(rng.normal(size=(200, 10)) * 3)
    assert activation_distance(x, y) == pytest.approx(ssd_actv_dist(x, y), rel=1e-12)
    assert activation_distance(x.float(), y.numpy()) == pytest.approx(ssd_actv_dist(x.float(), y), rel=1e-12)


def test_activation_distance_known_answer():
    """softmax([0, 0]) vs softmax([L, 0]): per-sample distance sqrt(2) |sigmoid(L) - 1/2|; identical rows give 0."""
    L = np.array([0.0, 1.0, 3.0, 50.0])
    a, b = np.zeros((4, 2)), np.c_[L, np.zeros(4)]
    expected = np.mean(math.sqrt(2.0) * np.abs(1 / (1 + np.exp(-L)) - 0.5))
    assert activation_distance(a, b) == pytest.approx(expected, rel=1e-14)
    assert activation_distance(b, b) == 0.0


# ---------------------------------------------------------------------------------- modified entropy
def test_modified_entropy_equals_song_mittal_formula():
    rng = np.random.default_rng(0)
    logits, labels = synthetic(2000, 10, 3.0, rng)
    probs = F.softmax(logits.double(), dim=1).numpy()
    expected = song_mittal_m_entropy(probs, labels.numpy())
    got = modified_entropy(logits, labels)
    assert got.dtype == np.float64 and (got >= 0).all()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(modified_entropy(logits.float(), labels.numpy()),
                               song_mittal_m_entropy(F.softmax(logits.float().double(), 1).numpy(), labels.numpy()),
                               rtol=1e-10, atol=1e-14)


def test_modified_entropy_is_not_salun_m_entropy():
    """SalUn's ``m_entropy`` writes ``[:, labels]`` (whole columns) and uses log p for log(1 - p): it differs."""
    p = F.softmax(torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=torch.float64), dim=1)
    labels = torch.tensor([0, 1])
    log_prob = torch.where(p > 0, p.log(), torch.tensor(1e-30).log())
    modified_probs = p.clone()
    modified_probs[:, labels] = (1 - p)[:, labels]
    modified_log_probs = log_prob.clone()
    modified_log_probs[:, labels] = log_prob[:, labels]
    salun = (-torch.sum(modified_probs * modified_log_probs, dim=-1)).numpy()
    ours = modified_entropy(p.log(), labels)
    np.testing.assert_allclose(ours, song_mittal_m_entropy(p.numpy(), labels.numpy()), rtol=1e-12)
    assert np.all(np.abs(ours - salun) > 1e-3)


FLOOR = -math.log(1e-30)  # Song & Mittal's safe-log ceiling, 69.08 nats


@pytest.mark.parametrize("g", [5.0, 30.0, 50.0, 1000.0])
def test_modified_entropy_when_the_label_probability_tends_to_one(g):
    """logits [g, 0, 0], y = 0: p_y = 1/(1+2e^-g), p_c = e^-g/(1+2e^-g). Tends to 0, stays finite."""
    e = math.exp(-g)
    p_y, p_c = 1 / (1 + 2 * e), e / (1 + 2 * e)
    term_y = (2 * e / (1 + 2 * e)) * math.log1p(2 * e)               # (1 - p_y) (-log p_y)
    term_c = p_c * (math.log1p(2 * e) - math.log1p(e))               # p_c (-log(1 - p_c)), twice
    expected = term_y + 2 * term_c
    got = modified_entropy(np.array([[g, 0.0, 0.0]]), np.array([0]))
    assert np.isfinite(got).all() and got[0] >= 0
    assert got[0] == pytest.approx(expected, rel=1e-6, abs=1e-25)
    assert p_y > 0.98


@pytest.mark.parametrize("g", [5.0, 30.0, 50.0, 100.0, 1000.0, 1e6])
def test_modified_entropy_when_a_wrong_class_probability_tends_to_one(g):
    """logits [0, g, 0], y = 0: -log p_y = A = log(2 + e^g), -log(1 - p_1) = A - log 2, -log(1 - p_2) =
    log1p(1/(1+e^g)); each log capped at 69.08 nats (Song & Mittal's 1e-30 floor): finite, at most 2 x 69.08."""
    e = math.exp(-g)
    A = g + math.log1p(2 * e)
    one_minus_p_y = (1 + e) / (1 + 2 * e)
    p_1, p_2 = 1 / (1 + 2 * e), e / (1 + 2 * e)
    expected = (one_minus_p_y * min(A, FLOOR) + p_1 * min(A - math.log(2.0), FLOOR)
                + p_2 * math.log1p(e / (1 + e)))
    got = modified_entropy(np.array([[0.0, g, 0.0]]), np.array([0]))
    assert np.isfinite(got).all()
    assert got[0] == pytest.approx(expected, rel=1e-12)
    assert got[0] <= 2 * FLOOR + 1e-9
