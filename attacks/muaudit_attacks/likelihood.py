"""Numerical core of LiRA (Carlini et al., S&P 2022) and U-LiRA (Hayes et al., 2024): pure NumPy/SciPy.

LiRA. M shadow models are each trained on a random half of the data (:func:`balanced_keep_matrix`). For every
example x, the signal of each shadow is the logit-scaled confidence phi = z_y - logsumexp_{j != y} z_j
(:func:`logit_scaled_confidence`), which is close to Gaussian across training runs. Per example, one Gaussian is
fitted to the phi of the shadows that trained on x (IN) and one to those that did not (OUT) (:func:`fit_gaussians`);
the target model's phi is then scored by a likelihood ratio (online, :func:`lira_online`) or by a one-sided test
against the OUT Gaussian alone (offline, :func:`lira_offline`). Scores are higher for members.

U-LiRA (Hayes, Shumailov, Triantafillou, Khalifa, Papernot: "Inexact unlearning needs more careful evaluations to
avoid a false sense of privacy", 2024) uses the same two functions with different shadow populations:

- IN' replaces IN: shadows trained on x and then *unlearned* (x in their forget set) by the audited method, with
  the same recipe as the target. OUT is unchanged: shadows never trained on x, i.e. samples of the gold model.
  ``keep`` marks the IN' shadows. So the score tests "was x unlearned by this method" against "x was never seen".
- The target is evaluated on a balanced set: forget examples of the unlearned target (positives) against held-out
  examples the target never saw (negatives), each scored against its own per-example IN'/OUT fit.
- Success is chance level: AUC 0.5 and TPR at low FPR equal to the FPR (the unlearned model is as likely as the gold
  model to have produced what is observed). A score well above chance is under-forgetting; well below is the
  Streisand effect (over-forgetting makes forgotten examples recognisable).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from muaudit.readouts import logit_scaled_confidence  # noqa: F401  (re-exported: the signal of LiRA)
from muaudit.shadows import balanced_keep_matrix  # noqa: F401  (re-exported: the shadows' IN/OUT split)

#: Shadows per side (IN and OUT, per example) below which ``variance="auto"`` pools the variance over examples.
MIN_PER_EXAMPLE = 64
#: Smallest standard deviation used in a Gaussian (a constant signal would otherwise give a zero-width density).
STD_FLOOR = 1e-30
VARIANCE_MODES = ("auto", "global", "per-example")


@dataclass(frozen=True, eq=False)  # eq=False: fields are arrays, whose == is elementwise
class GaussianFit:
    """Per-example IN and OUT Gaussians of the shadow signals, with the counts and settings used."""

    mean_in: np.ndarray
    std_in: np.ndarray
    mean_out: np.ndarray
    std_out: np.ndarray
    n_in: np.ndarray
    n_out: np.ndarray
    variance: str  # the mode used: "global" or "per-example"
    variance_requested: str
    min_per_example: int
    std_floor: float = STD_FLOOR

    @property
    def settings(self) -> dict[str, object]:
        """The knobs to record next to any result (attack reference, reporting convention 5)."""
        return {"location": "median", "variance": self.variance, "variance_requested": self.variance_requested,
                "min_per_example": self.min_per_example, "n_in_min": int(self.n_in.min()),
                "n_out_min": int(self.n_out.min()), "n_examples": int(self.mean_in.size),
                "std_floor": self.std_floor}


def fit_gaussians(shadow_phi: np.ndarray, keep: np.ndarray, variance: str = "auto",
                  min_per_example: int = MIN_PER_EXAMPLE) -> GaussianFit:
    """Fit per-example IN (``keep``) and OUT (``~keep``) Gaussians to shadow signals ``(M, N)``.

    Location: the per-example **median** (Carlini et al.'s ``plot.py::generate_ours``: ``np.median``), robust to the
    occasional diverged shadow. Scale:

    - ``"per-example"``: the per-example standard deviation (``np.std``, ddof 0, as in the reference code).
    - ``"global"``: [DECISION] the pooled standard deviation of residuals, sqrt(mean over all IN entries of
      (phi - median_x)^2), and likewise for OUT. Carlini's ``fix_variance`` instead takes ``np.std`` of all IN values
      of all examples, which adds the between-example spread of the medians (often far larger than the within-example
      spread) and then reuses the IN std for OUT; neither is copied. The pooled residual std estimates the common
      within-example spread, and IN and OUT keep their own.
    - ``"auto"``: "global" when any example has fewer than ``min_per_example`` IN or OUT shadows, else
      "per-example" (the LiRA paper: a global variance when there are fewer than ~64 shadows).

    Standard deviations are floored at ``STD_FLOOR`` so that a constant signal gives a finite, very peaked density.
    """
    phi = np.asarray(shadow_phi, dtype=np.float64)
    keep = np.asarray(keep)
    if phi.ndim != 2:
        raise ValueError(f"shadow_phi must have shape (M, N), got {phi.shape}")
    if keep.shape != phi.shape or keep.dtype != np.bool_:
        raise ValueError(f"keep must be a boolean array of shape {phi.shape}, got {keep.dtype} {keep.shape}")
    if not np.all(np.isfinite(phi)):
        raise ValueError("shadow_phi contains non-finite values")
    if variance not in VARIANCE_MODES:
        raise ValueError(f"variance must be one of {VARIANCE_MODES}, got {variance!r}")
    if min_per_example < 1:
        raise ValueError(f"min_per_example must be >= 1, got {min_per_example}")
    n_in, n_out = keep.sum(axis=0), (~keep).sum(axis=0)
    for side, counts in (("IN", n_in), ("OUT", n_out)):
        if np.any(counts == 0):
            raise ValueError(f"{int(np.sum(counts == 0))} of {counts.size} examples have no {side} shadow model")
    mode = variance
    if mode == "auto":
        mode = "global" if min(n_in.min(), n_out.min()) < min_per_example else "per-example"
    fits = [_fit_side(phi, mask, mode) for mask in (keep, ~keep)]
    return GaussianFit(mean_in=fits[0][0], std_in=fits[0][1], mean_out=fits[1][0], std_out=fits[1][1],
                       n_in=n_in, n_out=n_out, variance=mode, variance_requested=variance,
                       min_per_example=min_per_example)


def _fit_side(phi: np.ndarray, mask: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    values = np.where(mask, phi, np.nan)
    # Column medians of the masked values: NaNs sort last, so the median of the n kept values sits at rows
    # (n - 1) // 2 and n // 2 (the same as np.nanmedian, several times faster for (M, N) shadow tables).
    ordered, n = np.sort(values, axis=0), mask.sum(axis=0)
    rows = np.stack([(n - 1) // 2, n // 2])
    median = np.take_along_axis(ordered, rows, axis=0).mean(axis=0)
    if mode == "per-example":
        std = np.nanstd(values, axis=0)
    else:
        std = np.full(phi.shape[1], np.sqrt(np.mean((phi - median)[mask] ** 2)))
    return median, np.maximum(std, STD_FLOOR)


def lira_online(phi_target: np.ndarray, fit: GaussianFit) -> np.ndarray:
    """Online LiRA: log N(phi; mu_in, s_in) - log N(phi; mu_out, s_out) per example (higher = member).

    Carlini et al. 2022, Algorithm 1 (the log of the likelihood ratio, ``plot.py::generate_ours``).
    """
    phi = _target(phi_target, fit)
    return norm.logpdf(phi, fit.mean_in, fit.std_in) - norm.logpdf(phi, fit.mean_out, fit.std_out)


def lira_offline(phi_target: np.ndarray, fit: GaussianFit) -> np.ndarray:
    """Offline LiRA: log Lambda with Lambda = 1 - Pr[Z > phi] = Pr[Z <= phi], Z ~ N(mu_out, s_out^2).

    The LiRA paper's offline test (Section 4.3, Algorithm 1 offline variant) is one-sided: members have *higher*
    confidence than OUT models give. [DECISION] Carlini's released ``generate_ours_offline`` scores
    ``-logpdf_out`` instead, which is two-sided: it also calls a member any example whose confidence is unusually
    *low*, which is not evidence of training on it (and for unlearning would confuse over-forgetting with
    membership). The paper's one-sided test is used, returned as ``norm.logcdf`` (a monotone transform of Lambda,
    so the ROC is unchanged) because Lambda itself rounds to 1 in the upper tail where members lie.
    """
    phi = _target(phi_target, fit)
    return norm.logcdf(phi, fit.mean_out, fit.std_out)


def _target(phi_target: np.ndarray, fit: GaussianFit) -> np.ndarray:
    phi = np.asarray(phi_target, dtype=np.float64)
    if phi.shape != fit.mean_in.shape:
        raise ValueError(f"phi_target must have shape {fit.mean_in.shape} (one value per fitted example), "
                         f"got {phi.shape}")
    if not np.all(np.isfinite(phi)):
        raise ValueError("phi_target contains non-finite values")
    return phi
