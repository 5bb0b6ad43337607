"""``natmu``: Natural Machine Unlearning (NatMU): inject retain information into the forget samples.

Paper: Zhengbao He, Tao Li, Xinwen Cheng, Zhehao Huang, Xiaolin Huang, "Towards Natural Machine Unlearning",
NeurIPS 2024 (arXiv 2405.15495).
Official code https://github.com/ZhengbaoHe/NatMU @ f7b977e: ``sample-wise/natmu.py``, ``class-wise/natmu.py``,
``*/utils/generate_patch_data.py`` / ``generate_natural_data.py``, ``*/utils/lr_scheduler.py``,
``class-wise/utils/train.py::init_linear`` and the ``scripts/**/natmu.sh`` settings.

Algorithm (Section 2.3)
-----------------------
1. *Partners.* For each forget instance ``(x_f, y_f)`` the original model (eval mode) ranks the classes other
   than ``y_f``; the top ``n = 4`` predicted wrong classes give one retain partner each ("top n predicted
   categories ... excluding the original category"; code ``select_patch_class``: ``topk(softmax(f(x)) *
   (1 - onehot(y)), k=4)``). The i-th most likely wrong class is paired with mask ``m_{i+1}``.
2. *Gradual MixUp masks.* Four masks ``m1..m4`` vary gradually along rows / columns; the scaling factor
   delta shifts them (eq. 1)::

       M_forget = clip_[0,1](m_j + delta),     M_retain = 1 - M_forget

   and the injecting function blends the two images pixel-wise::

       T_m(x_f, x_r) = x_f * M_forget + x_r * M_retain

3. *Unlearning instances* (eq. 2): ``D_i^f = {(T_{m_j}(x_i^f, x_j^r), y_j^r)}_{j=1..4}``: the label is the
   **retain partner's** label.
4. *Fine-tuning set* (eq. 3): ``D_Nat = D_r  U  D^f_forget`` (all of D_r plus the ``4 |D_f|`` mixed instances);
   fine-tune the original model with cross-entropy: AdamW, per-step cosine learning rate from ``lr`` to 0
   without warm-up, ``epochs = 5``, batch 128, shuffled (reference scripts).

Masks (reference ``generate_mask_cifar``, H = W = 32, ``b = 16``) and their generalisation
--------------------------------------------------------------------------------------------
The reference builds, for a row index r in [0, 32) (``up(t) = t/b``, ``down(t) = (b-1)/b - t/b``)::

    m1[r, :] = up(r) if r < b else down(r - b)      # tent along rows: 0 at rows 0 and 31, 15/16 at rows 15, 16
    m2[:, c] = the same tent along columns
    m3[r, :] = down(r) if r < b else up(r - b)      # inverted tent: 15/16 at the edges, 0 at rows 15, 16
    m4[:, c] = the inverted tent along columns

With ``d(r) = min(r, H - 1 - r)`` (distance to the nearer edge) and ``d_max = floor((H - 1) / 2)`` this is
exactly ``m1 = d / b`` and ``m3 = (d_max - d) / b`` with ``b = H / 2``; columns use ``W`` in the same way.
[DECISION] This closed form is used for every ``H x W``: it reproduces the reference bit-for-bit for 32x32
(and 64x64, TinyImageNet), stays symmetric for odd sizes (``b = H / 2`` is then a half-integer, e.g. 7 rows:
``d = 0,1,2,3,2,1,0``, ``m1 = d / 3.5``, peak ``3 / 3.5``), handles non-square images (rows use H, columns W),
and is identical over channels (any ``C``; 1 for digits / Fashion-MNIST, 3 for CIFAR). ``m1 + m3`` and
``m2 + m4`` are constant ``d_max / b``: each complementary pair covers the whole image once.

[DECISION] Vector inputs ``(N, D)`` (``npz`` tasks with feature vectors) are refused with a ``TaskError``: the
masks are spatial, and read as a ``1 x D`` image the row masks m1 and m3 would collapse to constants. NatMU is
an image method (the paper only evaluates images).

Hyperparameters
---------------
``preset`` (default ``"cifar10"``) fills every hyperparameter left at ``None``:

==================  =======  =======  =======  ===========  ==========  =====  ===============================
preset              lr       wd       delta    variant      reinit      bs     source
==================  =======  =======  =======  ===========  ==========  =====  ===============================
cifar10             1e-3     2e-3     -0.19    sample-wise  none        128    scripts/cifar10 (VGG16-BN, 1 %)
cifar100            1.1e-3   5e-4     -0.03    sample-wise  none        128    scripts/cifar100 (ResNet-18, 1 %)
tinyimagenet        8.3e-4   7e-5     +0.045   sample-wise  none        256    code, TinyImageNet (ResNet-34, 1 %)
cifar100-class      2.8e-4   0        -0.053   class-wise   all         128    scripts/full-class ("rocket", -i)
cifar20-subclass    9e-4     3.7e-4   -0.053   class-wise   none        128    scripts/sub-class ("rocket")
digits-class        1e-2     5e-4     0        class-wise   none        128    ours (8x8 digits, MLP), see below
digits              5e-3     5e-4     -0.25    sample-wise  none        128    ours, 13 epochs (end of docstring)
fmnist-5ep          1e-3     2e-3     -0.19    sample-wise  none        128    CIFAR-10 values transferred, below
fmnist-5ep-class    1e-3     2e-3     -0.19    class-wise   none        128    = fmnist-class (memorising task)
fmnist              5e-3     5e-4     -0.25    sample-wise  none        128    the digits values, 5 epochs
==================  =======  =======  =======  ===========  ==========  =====  ===============================

All presets use ``epochs = 5`` and AdamW (every script). The default preset is the paper's headline
random-subset setting (CIFAR-10); CIFAR-scale users get the published values. For full-class forgetting on
CIFAR-100 use ``preset=cifar100-class``, for CIFAR-20 sub-class ``cifar20-subclass``.

[DECISION] ``digits`` / ``fmnist``: no published values; ours. What follows is the first calibration (now
``digits-class`` and ``fmnist-5ep``); the current presets' measured effect is at the end of this docstring.
``digits`` (task ``digits``: 8x8, MLP, random
10 % forget set, 126 forget / 1131 retain images; 13 batches per epoch, 65 updates in 5 epochs): the paper's
lr ~1e-3 barely moves the MLP in 65 updates (forget accuracy stays 99-100 %), so ``lr = 1e-2``; ``delta = 0``
because on 8x8 images the tent peaks at 3/4 (15/16 on 32x32), so delta = 0 gives a mean forget share (0.375)
close to CIFAR-10's -0.19 on 32x32 (0.30); wd 5e-4. Measured (seeds 0-3): original forget accuracy 100 %,
gold retrains 95.2 %; NatMU 95.2-96.0 % after 5 epochs and 92.9-96.8 % after 20 (test accuracy 96.8-98.1 %,
gold 97.7-97.9 %), while random labels (Adam, same lr) fall to 90.5-94.4 % / 67.5-89.7 % / 19-38 % after
5 / 10 / 20 epochs (over-forgetting, the paper's Fig. 1). Pure retain partners (delta = -1, i.e. plain
fine-tuning with duplicates) leave 96.0-98.4 %. On ``digits-class`` (full class 3) ``variant=class-wise`` with
these values gives forget accuracy 0 % and test accuracy 87-88 % (gold 87.7-88.4 %), with or without
``reinit_linear``.
``fmnist`` (28x28 grey, LeNet-like CNN, about 490 batches per epoch) takes the CIFAR-10 values unchanged: the
number of updates is CIFAR-like (so the digits reason for a larger lr does not apply), 28x28 tents peak at
13/14, close to 32x32's 15/16, and the paper reports that NatMU's hyperparameters transfer across settings
(Section 3.2, Fig. 4). They were NOT tuned on Fashion-MNIST (this CPU-only session could not train the
Fashion-MNIST original and gold models in reasonable time); treat them as a starting point.

Individual parameters (``None`` = the preset's value):

- ``variant``: ``sample-wise`` (random-subset forgetting: partner classes are re-balanced, below) or
  ``class-wise`` (full-class / sub-class code: no balancing).
- ``lr`` (AdamW learning rate), ``weight_decay`` (AdamW decoupled weight decay), ``delta`` (eq. 1),
  ``batch_size``; ``epochs`` (default 5, every script).
- ``reinit_linear``: ``none``, ``all`` (reference ``-i``: **every** ``nn.Linear`` weight re-drawn from
  ``xavier_normal_(gain=calculate_gain("relu"))``, biases kept, after choosing partners and before training) or
  ``head`` (only the last ``nn.Linear``, our addition: on the zoo's MLP "all" re-initialises every layer).
- ``quantize`` (default False): see the decision on mixing below.

Data needs: the retain set (partners and fine-tuning), besides the forget set.

Decisions
---------
- [DECISION] *Mixing in [0, 1] space.* The reference mixes uint8 values as float32, clips to [0, 255] and casts
  to uint8 (truncation), then ``ToTensor`` divides by 255. Here ``x~ = x_r * M_retain + x_f * M_forget`` on the
  float ``[0, 1]`` inputs (a convex combination, so no clipping is needed). This differs from the reference by
  less than 1/255 per pixel and does not invent an 8-bit grid for data that has none (digits take values
  k/16). ``quantize=True`` reproduces the reference exactly for 8-bit data (CIFAR, Fashion-MNIST):
  ``floor(clip(u_r * M_retain + u_f * M_forget, 0, 255)) / 255`` with ``u = round(255 x)``.
- [DECISION] *Fewer than four wrong classes.* The number of masks stays 4 (every forget sample gives 4 mixed
  instances, so the complementary pairs m1/m3 and m2/m4 still cover the image); the number of distinct partner
  classes is ``k = min(4, number of candidate classes)`` and mask ``j`` gets the ``(j mod k)``-th most likely
  wrong class. Candidate classes are the classes other than ``y_f`` that have at least one retain image (a
  class without retain images can provide no partner; e.g. a second fully forgotten class).
- [DECISION] *Ranking.* The reference ranks ``softmax(f(x)) * (1 - onehot(y))``; a wrong class whose softmax
  underflows to 0 would tie with the zeroed true class, which ``topk`` could then return. Here the ranking uses
  ``log_softmax`` with ``-inf`` for excluded classes: the same order without that failure.
- [DECISION] *Sample-wise balancing, made total.* Reference (flattened requests, ``K`` classes,
  ``n_r = |D_r| / K``, ``cap = int(0.98 n_r)``): for ``i = 0..K-1`` push ``i`` to ``record`` if it is requested
  fewer than ``0.4 n_r`` times; if it is requested more than ``cap`` times keep the first ``cap`` requests (in
  flattened order) and move the rest to ``j = shuffled(record).pop()``. Its pitfalls: ``pop`` from an empty
  ``record`` raises; ``j`` may be the forget sample's own class or one of its other partners (breaking the
  paper's "distinct categories" rule); ``j`` may be pushed over its own cap; the cap ignores how many retain
  images class ``i`` really has, so the draw below can loop forever. Here: the cap of class ``i`` is
  ``min(cap, R_i)`` (``R_i`` = its retain images; this changes only cases where the reference's draw would
  loop forever); the excess goes to donors popped from the shuffled ``record`` (as in the reference), each donor
  ``j`` taking excess requests only while ``j`` stays within its own cap and only where ``j`` is neither the
  sample's true class nor already one of its partners; when ``record`` is exhausted, the other classes with
  spare capacity serve as donors (most spare capacity first, ties in random order); requests that no class
  can take stay with class ``i`` (and are served by the reuse fallback below). Every loop runs over a finite,
  shrinking list, so it always terminates.
- [DECISION] *Drawing partner images.* The reference's rejection loop draws a uniformly random retain image of
  the requested class for every request, each retain image used at most once, and loops forever when a class
  is requested more often than it has retain images (possible in the class-wise code, which never balances).
  Here each class's requests take the first entries of a random permutation of its retain images (the same
  distribution); if a class has fewer images than requests, further independent permutations are appended,
  i.e. images are reused as evenly as possible (sampling with replacement only once the class is exhausted)
  so that partners keep the class the model predicted. A class with no retain images is never requested.
- [DECISION] *Augmentation.* As in the reference, retain images are augmented with the task's training
  augmentation (``ctx.recipe.augment``, crop-flip for CIFAR tasks) and the mixed instances are never augmented.
- [DECISION] *Schedule.* Exactly the reference's ``lr_lambda_cosine`` (no warm-up, ``lr_min = 0``) stepped after
  every batch: update ``k`` (0-based) of ``T = epochs * ceil(|D_Nat| / bs)`` uses
  ``lr * (1 + cos(pi (k + 1) / T)) / 2`` (so the last update has learning rate 0, as in the reference).
- [DECISION] *Modes.* Partner ranking in eval mode; fine-tuning in train mode (BatchNorm statistics update, as
  the reference's ``net.train()``).
- [DECISION] *Randomness.* Balancing, partner images, data order, augmentation and re-initialisation draw from
  ``ctx.generator`` (weights are re-drawn on the CPU and copied to the device), so runs are bit-reproducible on
  the CPU.

Diagnostics after ``unlearn``: ``last_top_classes`` (forget samples x k, the ranked wrong classes),
``last_partner_classes`` (forget samples x 4, after balancing), ``last_partner_indices`` (indices into D_r) and
``last_mixed`` (the mixed instances as a ``Split``). It reports ``variant``, ``delta``, ``reinit_linear``,
``mixed_instances`` (how many mixed instances joined D_r), ``epochs`` and ``optimizer_steps`` as the run's
diagnostics (the scorecard's ``method.diagnostics``).

Task presets, measured (``preset="auto"``, the default, picks the one calibrated for the task at hand; the published
values stay ``preset=paper``; ``muaudit describe natmu`` lists every preset). Each default run on the named task, by
``reports/scripts/acceptance.py`` (3 gold seeds, errors in %):

- ``digits`` (preset ``digits``: lr=0.005, weight_decay=0.0005, delta=-0.25, variant=sample-wise,
  reinit_linear=none, batch_size=128, epochs=13): forget error 0.00 -> 2.38 (gold 4.76); test error 2.31 (tolerated
  up to 4.31)
- ``digits-class`` (preset ``digits-class``: lr=0.01, weight_decay=0.0005, delta=0, variant=class-wise,
  reinit_linear=none, batch_size=128): forget error 0.00 -> 100.00 (gold 100.00); test error 12.73 (tolerated up to
  14.35)
- ``fashion-mnist-random`` (preset ``fmnist``: lr=0.005, weight_decay=0.0005, delta=-0.25, variant=sample-wise,
  reinit_linear=none, batch_size=128, epochs=5): forget error 0.20 -> 7.55 (gold 10.37); test error 11.81 (tolerated
  up to 13.68)
- ``fashion-mnist-class`` (preset ``fmnist-class``: lr=0.001, weight_decay=0.002, delta=-0.19, variant=class-wise,
  reinit_linear=none, batch_size=128): forget error 0.10 -> 99.00 (gold 100.00); test error 18.10 (tolerated up to
  20.17)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from muaudit.base import MethodContext, MethodData, UnlearningMethod
from muaudit.data import Split
from muaudit.errors import DataError, TaskError
from muaudit.params import Choice, Interval, Param, Search
from muaudit.presets import PresetChoice, TaskProfile, preset_param
from muaudit.training import augment_batch, predict_logits, progress_bar

N_MASKS = 4
VARIANTS = ("sample-wise", "class-wise")
REINIT = ("none", "all", "head")

#: Published (CIFAR / TinyImageNet) and calibrated (digits / Fashion-MNIST) settings; see the module docstring.
PRESETS: dict[str, dict[str, Any]] = {
    "cifar10": {"lr": 1e-3, "weight_decay": 2e-3, "delta": -0.19, "variant": "sample-wise",
                "reinit_linear": "none", "batch_size": 128},
    "cifar100": {"lr": 1.1e-3, "weight_decay": 5e-4, "delta": -0.03, "variant": "sample-wise",
                 "reinit_linear": "none", "batch_size": 128},
    "tinyimagenet": {"lr": 8.3e-4, "weight_decay": 7e-5, "delta": 0.045, "variant": "sample-wise",
                     "reinit_linear": "none", "batch_size": 256},
    "cifar100-class": {"lr": 2.8e-4, "weight_decay": 0.0, "delta": -0.053, "variant": "class-wise",
                       "reinit_linear": "all", "batch_size": 128},
    "cifar20-subclass": {"lr": 9e-4, "weight_decay": 3.7e-4, "delta": -0.053, "variant": "class-wise",
                         "reinit_linear": "none", "batch_size": 128},
    "digits": {"lr": 1e-2, "weight_decay": 5e-4, "delta": 0.0, "variant": "sample-wise",
               "reinit_linear": "none", "batch_size": 128},
    "fmnist-5ep": {"lr": 1e-3, "weight_decay": 2e-3, "delta": -0.19, "variant": "sample-wise",
               "reinit_linear": "none", "batch_size": 128},
}
#: Full-class forgetting on the small tasks: the class-wise code path (no partner balancing), as the paper's
#: full-class scripts; the other values as for random subsets (see the module docstring).
PRESETS["digits-class"] = {**PRESETS["digits"], "variant": "class-wise"}
PRESETS["fmnist-5ep-class"] = {**PRESETS["fmnist-5ep"], "variant": "class-wise"}
#: Random subsets of digits: calibrated (reports/protocol/calibration/digits): a stronger forget share (delta
#: -0.25) and 13 epochs at lr 5e-3 move the forget error (0 -> 2.4 against gold 4.8) with test error unchanged.
PRESETS["digits"] = {**PRESETS["digits"], "lr": 5e-3, "delta": -0.25, "epochs": 13}
#: The memorising Fashion-MNIST tasks (10,000 images, 25 epochs): the digits values in 5 epochs (random subset:
#: forget error 0.2 -> 7.6 against gold 10.4, test error 11.8 against 11.7); full class: the class-wise values of
#: the earlier 5-epoch tasks (forget error 99.0 against 100, test error 18.1 against 18.2).
PRESETS["fmnist"] = {**PRESETS["digits"], "epochs": 5}
PRESETS["fmnist-class"] = dict(PRESETS["fmnist-5ep-class"])


# ------------------------------------------------------------------------------------------------ masks
def _tents(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The tent ``d / b`` and the inverted tent ``(d_max - d) / b`` along one axis, ``b = size / 2``."""
    r = torch.arange(size, dtype=torch.float64)
    d = torch.minimum(r, size - 1 - r)
    b = size / 2.0
    d_max = float((size - 1) // 2)
    return d / b, (d_max - d) / b


def gradual_masks(height: int, width: int) -> torch.Tensor:
    """The four unscaled gradual-MixUp masks ``m1..m4`` as a ``(4, H, W)`` float32 tensor."""
    if height < 1 or width < 1:
        raise TaskError(f"natmu needs images of at least 1x1 pixels, got {height}x{width}")
    up_r, down_r = (t[:, None].expand(height, width) for t in _tents(height))
    up_c, down_c = (t[None, :].expand(height, width) for t in _tents(width))
    return torch.stack([up_r, up_c, down_r, down_c]).to(torch.float32)


def scaled_masks(height: int, width: int, delta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(M_forget, M_retain)`` of eq. (1), each ``(4, 1, H, W)`` float32 (broadcast over channels)."""
    m_forget = (gradual_masks(height, width) + float(delta)).clamp(0.0, 1.0)[:, None]
    return m_forget, 1.0 - m_forget


def mix(x_forget: torch.Tensor, x_retain: torch.Tensor, m_forget: torch.Tensor, m_retain: torch.Tensor,
        quantize: bool = False) -> torch.Tensor:
    """The injecting function ``x_r * M_retain + x_f * M_forget`` on [0, 1] images (all shapes broadcast).

    ``quantize=True`` reproduces the reference's uint8 arithmetic (float32 mix of 0..255 values, clip, truncate).
    """
    if not quantize:
        return x_retain * m_retain + x_forget * m_forget
    u_forget, u_retain = torch.round(x_forget * 255.0), torch.round(x_retain * 255.0)
    mixed = (u_retain * m_retain + u_forget * m_forget).clamp(0.0, 255.0).floor()
    return mixed / 255.0


# --------------------------------------------------------------------------------------------- partners
def rank_wrong_classes(logits: torch.Tensor, labels: torch.Tensor, available: torch.Tensor,
                       n_masks: int = N_MASKS) -> torch.Tensor:
    """Top ``k`` predicted classes other than each sample's label and restricted to ``available`` classes.

    ``k = min(n_masks, fewest candidates of any sample)``; returns ``(n, k)`` int64, most likely first.
    """
    n, n_classes = logits.shape
    if n == 0:
        return torch.zeros((0, 1), dtype=torch.int64)
    allowed = available.to(torch.bool)[None, :].expand(n, n_classes).clone()
    allowed[torch.arange(n), labels] = False
    fewest = int(allowed.sum(1).min())
    if fewest < 1:
        raise DataError("natmu: some forget sample has no retain partner class (the retain set holds no image of "
                        "any class other than the sample's own)")
    k = min(n_masks, fewest)
    scores = torch.log_softmax(logits.double(), dim=1).masked_fill(~allowed, -math.inf)
    return torch.topk(scores, k=k, dim=1).indices


def assign_masks(top: torch.Tensor, n_masks: int = N_MASKS) -> torch.Tensor:
    """Partner class of every (sample, mask): mask ``j`` gets the ``(j mod k)``-th ranked class."""
    k = top.shape[1]
    return top[:, torch.arange(n_masks) % k]


def balance_partner_classes(classes: torch.Tensor, labels: torch.Tensor, retain_counts: torch.Tensor,
                            gen: torch.Generator) -> torch.Tensor:
    """Sample-wise class balancing of the reference, made total (see the module docstring).

    ``classes`` is ``(n_f, M)``; returns a re-balanced copy. Never requests a sample's own label, never repeats
    a class that the sample already has, never pushes a donor over its cap, and always terminates.
    """
    n_f, n_masks = classes.shape
    counts = retain_counts.numpy().astype(np.int64)
    n_classes = counts.shape[0]
    flat = classes.reshape(-1).numpy().copy()
    rows = flat.reshape(n_f, n_masks)  # a view: updates to ``flat`` show here
    true = labels.numpy()
    per_class = counts.sum() / n_classes
    caps = np.minimum(int(per_class * 0.98), counts)
    low = per_class * 0.4
    demand = np.bincount(flat, minlength=n_classes)
    record: list[int] = []
    for i in range(n_classes):
        if demand[i] < low:
            record.append(i)
        if demand[i] <= caps[i]:
            continue
        pending = np.flatnonzero(flat == i)[caps[i]:]
        order = torch.randperm(len(record), generator=gen).tolist()
        record = [record[o] for o in order]
        while len(pending) and record:
            pending = _give(pending, record.pop(), i, flat, rows, true, demand, caps, n_masks)
        if len(pending):
            for j in _spare_donors(i, demand, caps, gen):
                pending = _give(pending, j, i, flat, rows, true, demand, caps, n_masks)
                if not len(pending):
                    break
    return torch.from_numpy(flat.reshape(n_f, n_masks).copy())


def _give(pending: np.ndarray, j: int, i: int, flat: np.ndarray, rows: np.ndarray, true: np.ndarray,
          demand: np.ndarray, caps: np.ndarray, n_masks: int) -> np.ndarray:
    """Move as many ``pending`` requests of class ``i`` to donor ``j`` as allowed; return those left."""
    spare = int(caps[j] - demand[j])
    if j == i or spare <= 0:
        return pending
    samples = pending // n_masks
    ok = (true[samples] != j) & ~(rows[samples] == j).any(axis=1)
    candidates = pending[ok]
    _, first = np.unique(candidates // n_masks, return_index=True)  # one slot per sample keeps classes distinct
    chosen = np.sort(candidates[first])[:spare]
    flat[chosen] = j
    demand[j] += len(chosen)
    demand[i] -= len(chosen)
    return np.setdiff1d(pending, chosen, assume_unique=True)


def _spare_donors(i: int, demand: np.ndarray, caps: np.ndarray, gen: torch.Generator) -> list[int]:
    """Classes other than ``i`` with spare capacity, most spare first, ties in random order."""
    spare = caps - demand
    tie = torch.randperm(len(spare), generator=gen).numpy()
    order = np.lexsort((tie, -spare))
    return [int(j) for j in order if j != i and spare[j] > 0]


def draw_partner_indices(classes: torch.Tensor, retain_labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One retain index per request (flattened ``classes``): uniform within the class, without replacement
    while the class has unused images, then reusing them as evenly as possible (fresh permutations)."""
    flat = classes.reshape(-1)
    out = torch.empty_like(flat)
    for c in torch.unique(flat).tolist():
        slots = torch.nonzero(flat == c).flatten()
        pool = torch.nonzero(retain_labels == c).flatten()
        if len(pool) == 0:
            raise DataError(f"natmu: class {c} was requested as a partner but has no retain image")
        rounds = math.ceil(len(slots) / len(pool))
        perm = torch.cat([pool[torch.randperm(len(pool), generator=gen)] for _ in range(rounds)])
        out[slots] = perm[: len(slots)]
    return out


# ----------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class NatMUSettings:
    """Resolved hyperparameters of one NatMU run."""

    variant: str
    lr: float
    weight_decay: float
    delta: float
    epochs: int
    batch_size: int
    reinit_linear: str
    quantize: bool


def resolve_settings(hparams: dict[str, Any]) -> NatMUSettings:
    preset = PRESETS[str(hparams["preset"])]
    pick = {k: (preset[k] if hparams.get(k) is None else hparams[k]) for k in preset}
    return NatMUSettings(variant=pick["variant"], lr=float(pick["lr"]), weight_decay=float(pick["weight_decay"]),
                         delta=float(pick["delta"]), epochs=int(hparams["epochs"]),
                         batch_size=int(pick["batch_size"]), reinit_linear=pick["reinit_linear"],
                         quantize=bool(hparams["quantize"]))


# ------------------------------------------------------------------------------------------- the method
@dataclass(frozen=True)
class UnlearningInstances:
    """The mixed instances and how they were built."""

    mixed: Split
    top: torch.Tensor
    classes: torch.Tensor
    partners: torch.Tensor


def image_shape(x: torch.Tensor) -> tuple[int, int]:
    if x.dim() != 4:
        raise TaskError(f"natmu needs image inputs (N, C, H, W); this task has inputs of shape "
                        f"{tuple(x.shape[1:])}: its gradual-MixUp masks are spatial (vector data is not supported)")
    return int(x.shape[2]), int(x.shape[3])


def build_instances(model: nn.Module, forget: Split, retain: Split, s: NatMUSettings, n_classes: int,
                    ctx: MethodContext) -> UnlearningInstances:
    """Steps 1 to 3: rank wrong classes, (balance,) draw partners and mix (eq. 1 and 2)."""
    height, width = image_shape(forget.x)
    if len(retain) == 0:
        raise DataError("natmu needs a non-empty retain set")
    gen = ctx.generator("natmu", "partners")
    retain_counts = torch.bincount(retain.y, minlength=n_classes)
    logits = predict_logits(model, forget, ctx.device) if len(forget) else torch.empty(0, n_classes)
    top = rank_wrong_classes(logits, forget.y, retain_counts > 0)
    classes = assign_masks(top)
    if s.variant == "sample-wise":
        classes = balance_partner_classes(classes, forget.y, retain_counts, gen)
    partners = draw_partner_indices(classes, retain.y, gen)
    m_forget, m_retain = scaled_masks(height, width, s.delta)
    x_f = forget.x[:, None]  # (n_f, 1, C, H, W) against masks (4, 1, H, W)
    x_r = retain.x[partners].reshape(len(forget), N_MASKS, *retain.x.shape[1:])
    x = mix(x_f, x_r, m_forget, m_retain, s.quantize).reshape(-1, *retain.x.shape[1:]).contiguous()
    mixed = Split(x, retain.y[partners].clone())
    return UnlearningInstances(mixed, top, classes, partners)


def reinit_linear(model: nn.Module, which: str, gen: torch.Generator) -> None:
    """Reference ``init_linear``: xavier_normal (relu gain) on nn.Linear weights (``all`` or only the ``head``)."""
    if which == "none":
        return
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    targets = linears if which == "all" else linears[-1:]
    gain = nn.init.calculate_gain("relu")
    with torch.no_grad():
        for layer in targets:
            weight = torch.empty(layer.weight.shape, dtype=torch.float32)
            nn.init.xavier_normal_(weight, gain=gain, generator=gen)
            layer.weight.copy_(weight.to(layer.weight.dtype))


def cosine_factor(step: int, total: int) -> float:
    """Reference ``lr_lambda_cosine`` (no warm-up, lr_min 0): factor of update ``step`` (0-based)."""
    return 0.5 * (1.0 + math.cos(math.pi * (step + 1) / total))


def finetune(model: nn.Module, retain: Split, mixed: Split, s: NatMUSettings, ctx: MethodContext) -> nn.Module:
    """Step 4: AdamW with per-step cosine lr on D_r (augmented) plus the mixed instances (not augmented)."""
    device = ctx.device
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    gen = ctx.generator("natmu", "order")
    n_r, n = len(retain), len(retain) + len(mixed)
    total = s.epochs * math.ceil(n / s.batch_size)
    step = 0
    with progress_bar(total, ctx.progress) as bar:
        for _ in range(s.epochs):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, s.batch_size):
                idx = order[start:start + s.batch_size]
                r_idx, m_idx = idx[idx < n_r], idx[idx >= n_r] - n_r
                x_r = augment_batch(retain.x[r_idx].to(device), ctx.recipe.augment, gen)
                x = torch.cat([x_r, mixed.x[m_idx].to(device)])
                y = torch.cat([retain.y[r_idx], mixed.y[m_idx]]).to(device)
                for group in opt.param_groups:
                    group["lr"] = s.lr * cosine_factor(step, total)
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()
                opt.step()
                step += 1
                bar.update(1)
    return model.eval()


def _nullable(name: str, type_: type, help_: str, constraint: Interval | Choice, search: Search | None = None
              ) -> Param:
    return Param(name, type_, None, help_ + " (none = the preset's value)", constraint, nullable=True,
                 search=search)


def _published_preset(profile: TaskProfile) -> str:
    """The published setting of a CIFAR/TinyImageNet-scale task: by data set and removal kind."""
    if profile.dataset == "cifar20" and profile.removal == "class":
        return "cifar20-subclass"
    if profile.dataset == "cifar100":
        return "cifar100-class" if profile.removal == "class" else "cifar100"
    return "cifar10"


class NatMU(UnlearningMethod):
    """Fine-tune on D_r plus forget samples blended with retain partners labelled as the partners."""

    name = "natmu"
    summary = "NatMU: blend forget images with retain images of their top wrong classes (gradual MixUp), fine-tune."
    paper = ("He, Li, Cheng, Huang and Huang, 'Towards Natural Machine Unlearning', NeurIPS 2024, arXiv:2405.15495; "
             "code: github.com/ZhengbaoHe/NatMU")
    needs = frozenset({"retain"})
    presets = PRESETS
    params = (
        preset_param(PRESETS, "published setting (cifar10, cifar100, tinyimagenet, cifar100-class, "
                     "cifar20-subclass) or our digits / fmnist calibration"),
        _nullable("variant", str, "sample-wise (balanced partner classes) or class-wise (no balancing)",
                  Choice(VARIANTS)),
        _nullable("lr", float, "AdamW learning rate (cosine to 0 per step)", Interval(0, None, closed="neither"),
                  Search(1e-4, 5e-2, log=True)),
        _nullable("weight_decay", float, "AdamW weight decay", Interval(0, None)),
        _nullable("delta", float, "mask shift delta: M_forget = clip(m + delta, 0, 1)", Interval(-1, 1),
                  Search(-0.3, 0.3)),
        _nullable("batch_size", int, "mini-batch size", Interval(1, None)),
        Param("epochs", int, 5, "epochs over D_r plus the mixed instances", Interval(1, None), search=Search(1, 20)),
        _nullable("reinit_linear", str, "re-initialise nn.Linear weights before fine-tuning: none, all "
                  "(reference -i) or head", Choice(REINIT)),
        Param("quantize", bool, False, "round mixed images to the reference's uint8 grid (8-bit data)"),
    )

    @classmethod
    def auto_preset(cls, profile: TaskProfile) -> PresetChoice:
        """The general rule on the small scales; at CIFAR scale the published setting of the data set and kind."""
        if profile.family != "paper":
            return super().auto_preset(profile)
        name = _published_preset(profile)
        return PresetChoice(name, f"{profile.describe()} -> published setting {name!r}")

    def unlearn(self, model: nn.Module, data: MethodData, ctx: MethodContext) -> nn.Module:
        s = resolve_settings(self.hparams.as_dict())
        forget, retain = data.forget, data.retain
        inst = build_instances(model, forget, retain, s, ctx.n_classes, ctx)
        self.last_top_classes = inst.top
        self.last_partner_classes = inst.classes
        self.last_partner_indices = inst.partners
        self.last_mixed = inst.mixed
        reinit_linear(model, s.reinit_linear, ctx.generator("natmu", "reinit"))
        self.report(variant=s.variant, delta=s.delta, reinit_linear=s.reinit_linear, mixed_instances=len(inst.mixed),
                    epochs=s.epochs,
                    optimizer_steps=s.epochs * math.ceil((len(retain) + len(inst.mixed)) / s.batch_size))
        return finetune(model, retain, inst.mixed, s, ctx)
