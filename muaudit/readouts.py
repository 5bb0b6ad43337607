"""Readouts: pure functions of logits, labels and weights, each implemented once and used everywhere.

Logits come in as tensors or arrays of shape ``(N, K)``; probabilities are computed in float64 with SciPy.
Divergences use the natural logarithm (nats). Each function states the published definition it follows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from scipy import special, stats
from torch import nn


@dataclass(frozen=True)
class ReadoutInfo:
    """Metadata of a readout: unit, direction for gates, and where its definition comes from."""

    name: str
    unit: str
    higher_is_better: bool | None
    description: str


def _np(values: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def softmax(logits: torch.Tensor | np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    return special.softmax(_np(logits), axis=1)


def accuracy(logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """Fraction of rows whose arg-max equals the label."""
    predictions = _np(logits).argmax(axis=1)
    return float(np.mean(predictions == _np(labels).astype(np.int64)))


def error_percent(logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """100 - accuracy in percent (the PGU paper's test/forget/retain error)."""
    return 100.0 * (1.0 - accuracy(logits, labels))


def activation_distance(logits_a: torch.Tensor | np.ndarray, logits_b: torch.Tensor | np.ndarray) -> float:
    """Mean over examples of the L2 norm between the two softmax outputs (SSD/TMU ``actv_dist``)."""
    return float(np.mean(np.linalg.norm(softmax(logits_a) - softmax(logits_b), axis=1)))


def _log_softmax(logits: torch.Tensor | np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (finite even where the softmax underflows to 0)."""
    return special.log_softmax(_np(logits), axis=1)


def _kl_rows(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """Per-row ``sum_c p_c (log p_c - log q_c)`` from log-probabilities, with ``0 log 0 = 0``."""
    p = np.exp(log_p)
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (log_p - log_q), 0.0)
    return terms.sum(axis=1)


def js_divergence(logits_a: torch.Tensor | np.ndarray, logits_b: torch.Tensor | np.ndarray) -> float:
    """Mean per-example Jensen-Shannon divergence ``0.5 KL(p||m) + 0.5 KL(q||m)``, ``m = (p+q)/2`` (nats).

    Computed from log-probabilities; each per-example value is clipped to its mathematical range
    ``[0, ln 2]``. (SciPy's ``jensenshannon`` returns the square root of a sum that rounding can make
    slightly negative for near-identical rows, which gives NaN.)
    """
    log_p, log_q = _log_softmax(logits_a), _log_softmax(logits_b)
    log_m = np.logaddexp(log_p, log_q) - np.log(2.0)
    per_example = 0.5 * _kl_rows(log_p, log_m) + 0.5 * _kl_rows(log_q, log_m)
    return float(np.mean(np.clip(per_example, 0.0, np.log(2.0))))


def kl_divergence(logits_ref: torch.Tensor | np.ndarray, logits_model: torch.Tensor | np.ndarray) -> float:
    """Mean per-example ``KL(p_ref || p_model)`` in nats (the reference is the gold model).

    Computed from log-probabilities, so it stays finite when a softmax probability underflows to 0 (logit gaps
    beyond ~745, e.g. after gradient ascent); per-example values are clipped at 0 (rounding only).
    """
    per_example = _kl_rows(_log_softmax(logits_ref), _log_softmax(logits_model))
    return float(np.mean(np.maximum(per_example, 0.0)))


def losses(logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per-example cross-entropy ``-log softmax(logits)[y]`` in float64 (the loss attack's signal, negated)."""
    log_p = _log_softmax(_np(logits))
    y = _np(labels).astype(np.int64)
    return -log_p[np.arange(len(y)), y]


def entropies(logits: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per-example Shannon entropy of the softmax output, in nats (PGU's entropy distributions)."""
    return stats.entropy(softmax(logits), axis=1)


@dataclass(frozen=True)
class DistributionDistance:
    """Two-sample distances between entropy distributions."""

    wasserstein: float
    ks_statistic: float
    ks_pvalue: float


def distribution_distance(sample: np.ndarray, reference: np.ndarray) -> DistributionDistance:
    """1-Wasserstein distance and two-sample Kolmogorov-Smirnov test (SciPy) between two samples."""
    ks = stats.ks_2samp(sample, reference)
    return DistributionDistance(float(stats.wasserstein_distance(sample, reference)),
                                float(ks.statistic), float(ks.pvalue))


@dataclass(frozen=True)
class ParameterChange:
    """Norms of the difference between two models' parameters (buffers excluded)."""

    l1_all: float
    l2_all: float
    l1_last: float
    l2_last: float


def parameter_change(model_a: nn.Module, model_b: nn.Module, last_prefix: str) -> ParameterChange:
    """L1 and L2 norms of ``theta_a - theta_b`` over all parameters and over the layer ``last_prefix``.

    Following the delta-Targeted paper (Figs. 1-3): trainable parameters only; the "last layer" is the final
    fully-connected layer (weights and bias).
    """
    params_b = dict(model_b.named_parameters())
    diffs = {name: (p.detach().double().cpu() - params_b[name].detach().double().cpu()).reshape(-1)
             for name, p in model_a.named_parameters()}
    last = [d for name, d in diffs.items() if name.startswith(last_prefix)]
    return ParameterChange(_norm(diffs.values(), 1), _norm(diffs.values(), 2), _norm(last, 1), _norm(last, 2))


def _norm(parts: Iterable[torch.Tensor], order: int) -> float:
    flat = [p for p in parts]
    if not flat:
        return 0.0
    return float(torch.linalg.vector_norm(torch.cat(flat), ord=order))


#: NatMU's AvgGap as its paper's tables define it (He et al., NeurIPS 2024, Tables 1-3): RA = accuracy on the test
#: data (of the retained classes), FA = accuracy on D_f (FATrain), FATest = test accuracy of the forgotten classes
#: (class and sub-class removal only), MIA = the entropy MIA's D_f member ratio. A random subset has three terms:
#: Table 3's (0.24 + 0.28 + 8.84) / 3 = 3.12.
AVG_GAP_TERMS = ("RA", "FA", "FATest", "MIA")
#: The NatMU code's ``get_average_gap`` (``sample-wise/utils/util.py``): test, train-retain and forget accuracy and MIA.
AVG_GAP_CODE_TERMS = ("test_acc", "retain_acc", "forget_acc", "mia")


def avg_gap(model: Mapping[str, float], gold: Mapping[str, float], terms: Sequence[str]) -> float:
    """NatMU's AvgGap: the mean over ``terms`` of ``|model[t] - gold[t]|`` (each term in %).

    ``terms`` picks the definition: the paper's (the present subset of :data:`AVG_GAP_TERMS`) or the code's
    (:data:`AVG_GAP_CODE_TERMS`). A term missing from either mapping raises ``KeyError``.
    """
    if not terms:
        raise ValueError("avg_gap needs at least one term")
    return float(np.mean([abs(model[t] - gold[t]) for t in terms]))


def logit_scaled_confidence(logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> np.ndarray:
    """phi = z_y - logsumexp_{j != y} z_j = log(p_y / (1 - p_y)), in float64, for logits ``(..., K)``, labels ``(...)``.

    Carlini et al.'s reference code (``mi_lira_2021/score.py``) computes log(p_y) - log(sum_{j != y} p_j) from the
    softmax, which saturates once 1 - p_y underflows. [DECISION] The same quantity is computed directly from the
    logits with ``logsumexp`` over the wrong classes, so that it stays exact for margins of 1e4 and beyond.
    """
    z = logits.detach().cpu().double().numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits, np.float64)
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if z.ndim < 1 or z.shape[-1] < 2:
        raise ValueError(f"logits must have shape (..., K) with K >= 2 classes, got {z.shape}")
    if y.shape != z.shape[:-1]:
        raise ValueError(f"labels shape {y.shape} does not match logits shape {z.shape} without the class axis")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= z.shape[-1]):
        raise ValueError(f"labels must lie in [0, {z.shape[-1]}), got range [{y.min()}, {y.max()}]")
    correct = np.take_along_axis(z, y[..., None], axis=-1)[..., 0]
    wrong = z.copy()
    np.put_along_axis(wrong, y[..., None], -np.inf, axis=-1)
    return correct - special.logsumexp(wrong, axis=-1)
