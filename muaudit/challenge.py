"""The NeurIPS 2023 Machine Unlearning challenge score (Triantafillou et al. 2024, arXiv 2406.09073).

Follows the organisers' released evaluation code, google-deepmind/unlearning_evaluation (``metric.py``:
``compute_forget_score_from_confs``, ``_get_epsilons``, ``_get_single_threshold_rates``,
``_get_double_threshold_rates``; ``main.py``: the final score). In the competition, 512 unlearned models (the method
run 512 times from one original model) and 512 gold models (retrained on D_r with different seeds) were compared.

Per forget example x, on the logit-scaled confidence phi (``compute_logit_scaled_confidence``; in muaudit
:func:`muaudit.readouts.logit_scaled_confidence`) of x under every unlearned and every gold model:

1. The positive class is whichever sample (unlearned or gold) has the larger median (ties: unlearned).
2. If the range (max - min) of one sample is below 1% of the other's, the unlearned distribution is declared
   "very peaky" and epsilon is set to the cap, 50.
3. Two families of decision rules, each with every threshold of a grid of spacing 1/100 in phi:
   single threshold (predict positive when phi >= t; t on ``linspace(min, max)`` of all values), and double
   threshold (predict the *peakier* sample, the one with the smaller range w, when l <= phi <= r; r on a grid from
   min + w - 2 to max + 2 of that sample, and for each r, l on a grid from r - w - 2 to r - w + 2).
4. Per threshold: FPR = FNR = 0 gives epsilon = inf (perfect separation); exactly one of FPR, FNR = 0 is discarded
   ("an indication of insufficient samples"); otherwise epsilon = max(log(1 - delta - FPR) - log FNR,
   log(1 - delta - FNR) - log FPR), clipped below at 0 (a NaN term, the log of a negative number, is ignored).
   delta = 1e-5.
5. Epsilon of x = max over the surviving thresholds, clipped to [0, 50].

Forgetting quality F = mean over x of 2^-n where n = floor(eps / 0.5) is the 0-based bin (equivalently 2 / 2^n with
the 1-based bin index): eps in [0, 0.5) scores 1, [0.5, 1) scores 1/2, and so on; bins exist only up to
``max_epsilon = ceil(log(n_models - 1))`` (7 for 512 models: "a back-of-the-envelope calculation for the max value
of epsilon based on the given number of samples", since the smallest non-zero rate is 1/n and the largest finite
epsilon is about log(n - 1)); an epsilon at or above it scores 0. Final score = F x (mean retain accuracy of the
unlearned models / that of the gold models) x (mean test accuracy of unlearned / gold).

Minimum number of models. [DECISION] Hard minimum 3 per side: with 2 models ceil(log 1) = 0 leaves no bin, so F is 0
whatever the method. The scale depends on the model count through ``max_epsilon`` (n = 8: 4 bins, up to eps 2; n = 64:
10 bins, up to 5; n = 512: 14 bins, up to 7), so scores are comparable only at equal model counts and
comparable to the competition's only at 512 per side. Below ``RECOMMENDED_MODELS`` (64) per side the result carries a
note: the largest finite epsilon is then below log 63 = 4.1 and the empirical rates move in steps of more than 1/64,
too coarse to separate moderate from strong leakage.

Noise floor. Even when unlearned and gold models come from the same distribution, the maximum over thousands of
thresholds of empirical tail-rate ratios is not 0: with 512 Gaussian samples per side, epsilons of about 1 to 2.4 are
typical and F is about 0.2 (``tests/test_challenge.py``). That is the ceiling a perfect unlearner can reach; report F
next to the F of gold against gold models.

Sources: the released code above (read in full); the paper's abstract. The competition's technical note
(unlearning-challenge.github.io ``Machine_Unlearning_Metric.pdf``) was not available to check against.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

DELTA = 1e-5
#: Epsilon given to perfect separation and to "very peaky" unlearned distributions (``EPSILON_CAP`` in metric.py).
EPSILON_CAP = 50.0
#: Grid spacing of the thresholds: 100 thresholds per unit of phi (``NUM_THRESHOLDS_PER_UNIT``).
THRESHOLDS_PER_UNIT = 100
#: Half-width of the search window of the double-threshold rule (``buffer`` in ``_get_double_threshold_rates``).
DOUBLE_THRESHOLD_BUFFER = 2.0
#: Range ratio below which the peakier distribution is declared degenerate and epsilon is capped.
PEAKY_RATIO = 0.01
BIN_WIDTH = 0.5
MIN_MODELS = 3
RECOMMENDED_MODELS = 64


@dataclass(frozen=True, eq=False)  # eq=False: ``epsilons`` is an array
class ChallengeScore:
    """The challenge score of one unlearning method, with its parts and every setting used."""

    epsilons: np.ndarray  # (N,), per forget example, in [0, EPSILON_CAP]
    forgetting_quality: float  # F, in [0, 1]
    retain_ratio: float  # RA_unlearned / RA_gold
    test_ratio: float  # TA_unlearned / TA_gold
    score: float  # F * retain_ratio * test_ratio
    n_unlearned: int
    n_gold: int
    n_examples: int
    delta: float
    bin_width: float
    max_epsilon: float
    epsilon_cap: float = EPSILON_CAP
    thresholds_per_unit: int = THRESHOLDS_PER_UNIT
    source: str = "google-deepmind/unlearning_evaluation metric.py (NeurIPS 2023 Machine Unlearning challenge)"
    notes: tuple[str, ...] = field(default=())


def max_resolvable_epsilon(n_models: int) -> float:
    """``ceil(log(n - 1))``: the top of the last bin that ``n`` models per side can populate (metric.py)."""
    if n_models < MIN_MODELS:
        raise ValueError(f"need at least {MIN_MODELS} models per side, got {n_models}")
    return float(math.ceil(math.log(n_models - 1)))


def per_example_epsilon(unlearned_stats: np.ndarray, gold_stats: np.ndarray, delta: float = DELTA) -> np.ndarray:
    """Empirical epsilon per forget example from ``(n_u, N)`` unlearned and ``(n_g, N)`` gold statistics.

    Steps 1-5 of the module docstring. Decisions where the released code is silent or broken:

    - [DECISION] Rates are exact counts / n in float64 (the released code averages float32 indicators on a GPU),
      so FPR = 0 and FNR = 0 are exact; the grids are built as in the released code, in float64.
    - [DECISION] If both samples are constant (range 0; the released code divides 0 by 0 and goes on), epsilon is
      0 when they are the same constant and the cap otherwise (then one threshold separates them perfectly).
    - [DECISION] If no threshold survives step 4 (every rule leaves exactly one error rate at 0), epsilon is 0: no
      rule in the family gives evidence of a difference. The released code means to stop there with
      ``assert thr_eps``, which (``thr_eps`` being a NumPy array) raises for any array of more than one element
      instead; it is not copied.
    - Unequal model counts are allowed; each rate uses its own sample's size.

    Cost: about 160,000 double-threshold intervals per example (a 4-unit window at 1/100 resolution, squared),
    counted with ``searchsorted``: some 30 ms per example at 512 models per side on one CPU core.
    """
    u = np.asarray(unlearned_stats, dtype=np.float64)
    g = np.asarray(gold_stats, dtype=np.float64)
    _check_stats(u, g)
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must lie in [0, 1), got {delta}")
    retrain_positive = np.median(g, axis=0) > np.median(u, axis=0)
    eps = np.empty(u.shape[1])
    for i in range(u.shape[1]):
        pos, neg = (g[:, i], u[:, i]) if retrain_positive[i] else (u[:, i], g[:, i])
        eps[i] = _epsilon(np.sort(pos), np.sort(neg), delta)
    return np.clip(eps, 0.0, EPSILON_CAP)


def forgetting_quality(eps: np.ndarray, bin_width: float = BIN_WIDTH, max_epsilon: float = math.inf) -> float:
    """F = mean over examples of 2^-floor(eps / bin_width); bins exist only up to ``max_epsilon`` (then 0 points).

    An example scores 1 for eps in [0, w), 1/2 in [w, 2w), 1/4 in [2w, 3w), ... (metric.py's ``bucket_points``). A
    bin [k w, (k + 1) w) exists only when (k + 1) w <= ``max_epsilon``; :func:`challenge_score` passes
    :func:`max_resolvable_epsilon`. The default (no limit) scores every finite epsilon.
    """
    e = np.asarray(eps, dtype=np.float64)
    if e.ndim != 1 or e.size == 0:
        raise ValueError(f"eps must be a non-empty 1-D array, got shape {e.shape}")
    if np.any(np.isnan(e)) or np.any(e < 0):
        raise ValueError("eps must be non-negative and not NaN")
    if not bin_width > 0:
        raise ValueError(f"bin_width must be positive, got {bin_width}")
    k = np.floor(e / bin_width)
    has_bin = (k + 1) * bin_width <= max_epsilon
    points = np.where(has_bin, np.exp2(-np.where(has_bin, k, 0.0)), 0.0)
    return float(points.mean())


def challenge_score(unlearned_stats: np.ndarray, gold_stats: np.ndarray, retain_acc_u: float | np.ndarray,
                    retain_acc_gold: float | np.ndarray, test_acc_u: float | np.ndarray,
                    test_acc_gold: float | np.ndarray, delta: float = DELTA,
                    bin_width: float = BIN_WIDTH) -> ChallengeScore:
    """F x (RA_u / RA_gold) x (TA_u / TA_gold) (main.py); accuracies may be per-model arrays (their mean is used).

    [DECISION] ``max_epsilon`` uses the smaller of the two model counts (the released code uses the unlearned
    count and assumes both are equal): a bin is kept only if both samples can resolve it.
    """
    u = np.asarray(unlearned_stats, dtype=np.float64)
    g = np.asarray(gold_stats, dtype=np.float64)
    _check_stats(u, g)
    accs = {name: _mean_accuracy(name, value) for name, value in (
        ("retain_acc_u", retain_acc_u), ("retain_acc_gold", retain_acc_gold),
        ("test_acc_u", test_acc_u), ("test_acc_gold", test_acc_gold))}
    for name in ("retain_acc_gold", "test_acc_gold"):
        if accs[name] <= 0:
            raise ValueError(f"{name} must be positive to form a ratio, got {accs[name]}")
    n_min = min(u.shape[0], g.shape[0])
    max_eps = max_resolvable_epsilon(n_min)
    eps = per_example_epsilon(u, g, delta)
    quality = forgetting_quality(eps, bin_width, max_eps)
    retain_ratio = accs["retain_acc_u"] / accs["retain_acc_gold"]
    test_ratio = accs["test_acc_u"] / accs["test_acc_gold"]
    notes = []
    if n_min < RECOMMENDED_MODELS:
        notes.append(f"only {n_min} models per side (< {RECOMMENDED_MODELS}): epsilon is resolvable only up to "
                     f"{max_eps:g}; the competition used 512")
    if u.shape[0] != g.shape[0]:
        notes.append(f"unequal model counts ({u.shape[0]} unlearned, {g.shape[0]} gold)")
    return ChallengeScore(epsilons=eps, forgetting_quality=quality, retain_ratio=retain_ratio,
                          test_ratio=test_ratio, score=quality * retain_ratio * test_ratio,
                          n_unlearned=u.shape[0], n_gold=g.shape[0], n_examples=u.shape[1], delta=delta,
                          bin_width=bin_width, max_epsilon=max_eps, notes=tuple(notes))


def _epsilon(pos: np.ndarray, neg: np.ndarray, delta: float) -> float:
    """Epsilon of one example; ``pos`` (larger median) and ``neg`` sorted ascending."""
    pos_range, neg_range = pos[-1] - pos[0], neg[-1] - neg[0]
    largest, smallest = max(pos_range, neg_range), min(pos_range, neg_range)
    if largest == 0:
        return 0.0 if pos[0] == neg[0] else EPSILON_CAP
    if smallest / largest < PEAKY_RATIO:
        return EPSILON_CAP
    tp, fp = _single_threshold_counts(pos, neg)
    # The double-threshold rule calls the peakier sample positive (metric.py swaps when pos_range >= neg_range).
    peaky, broad = (neg, pos) if pos_range >= neg_range else (pos, neg)
    tp_d, fp_d = _double_threshold_counts(peaky, broad)
    n_pos = np.concatenate([np.full(tp.size, pos.size), np.full(tp_d.size, peaky.size)])
    n_neg = np.concatenate([np.full(fp.size, neg.size), np.full(fp_d.size, broad.size)])
    tp, fp = np.concatenate([tp, tp_d]), np.concatenate([fp, fp_d])
    fn = n_pos - tp
    perfect = (fp == 0) & (fn == 0)
    if np.any(perfect):
        return EPSILON_CAP
    usable = (fp > 0) & (fn > 0)
    if not np.any(usable):
        return 0.0
    fpr, fnr = fp[usable] / n_neg[usable], fn[usable] / n_pos[usable]
    with np.errstate(invalid="ignore", divide="ignore"):  # log(1 - delta - rate) is NaN when a rate is 1
        terms = np.stack([np.log(1 - delta - fpr) - np.log(fnr), np.log(1 - delta - fnr) - np.log(fpr)])
    defined = ~np.all(np.isnan(terms), axis=0)  # both terms NaN: metric.py drops the threshold
    if not np.any(defined):
        return 0.0
    per_threshold = np.max(np.where(np.isnan(terms), -np.inf, terms)[:, defined], axis=0)
    return float(np.clip(per_threshold, 0.0, None).max())


def _single_threshold_counts(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(TP, FP) of "positive when phi >= t" on metric.py's grid of all values (``_get_single_threshold_rates``)."""
    low, high = min(pos[0], neg[0]), max(pos[-1], neg[-1])
    thresholds = np.linspace(low, high, math.ceil((high - low) * THRESHOLDS_PER_UNIT))
    return _count_at_least(pos, thresholds), _count_at_least(neg, thresholds)


def _double_threshold_counts(peaky: np.ndarray, broad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(TP, FP) of "peaky when l <= phi <= r" on metric.py's grid (``_get_double_threshold_rates``)."""
    width = peaky[-1] - peaky[0]
    buffer = DOUBLE_THRESHOLD_BUFFER
    low, high = peaky[0] + width - buffer, peaky[-1] + buffer
    right = np.linspace(low, high, math.ceil((high - low) * THRESHOLDS_PER_UNIT))
    offsets = np.linspace(-width - buffer, -width + buffer, math.ceil(2 * buffer * THRESHOLDS_PER_UNIT))
    left = (right[:, None] + offsets[None, :]).ravel()
    right = np.repeat(right, offsets.size)
    return _count_between(peaky, left, right), _count_between(broad, left, right)


def _count_at_least(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    return sorted_values.size - np.searchsorted(sorted_values, thresholds, side="left")


def _count_between(sorted_values: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    counts = np.searchsorted(sorted_values, right, side="right") - np.searchsorted(sorted_values, left, side="left")
    return np.maximum(counts, 0)  # an empty interval (l > r) contains nothing


def _check_stats(u: np.ndarray, g: np.ndarray) -> None:
    if u.ndim != 2 or g.ndim != 2:
        raise ValueError(f"statistics must have shape (n_models, N), got {u.shape} and {g.shape}")
    if u.shape[1] != g.shape[1] or u.shape[1] == 0:
        raise ValueError(f"unlearned and gold statistics must cover the same N >= 1 examples, got {u.shape[1]} "
                         f"and {g.shape[1]}")
    if min(u.shape[0], g.shape[0]) < MIN_MODELS:
        raise ValueError(f"need at least {MIN_MODELS} unlearned and {MIN_MODELS} gold models, got {u.shape[0]} "
                         f"and {g.shape[0]}")
    if not (np.all(np.isfinite(u)) and np.all(np.isfinite(g))):
        raise ValueError("statistics contain non-finite values")


def _mean_accuracy(name: str, value: float | np.ndarray) -> float:
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must be finite, non-negative and non-empty")
    return float(arr.mean())
