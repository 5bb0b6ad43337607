"""``pgu``: Projected-Gradient Unlearning (PGU).

Paper: Hoang, Rana, Gupta and Venkatesh, "Learn to Unlearn for Deep Neural Networks: Minimizing Unlearning
Interference with Gradient Projection", WACV 2024 (``/work/shared/papers/001_8ea96f725320f741.txt``); reference
code ``hnanhtuan/projected_gradient_unlearning`` (notes: ``reference/methods.md`` section 1).

Algorithm:
1. Statistics (``compute_train_stats``, once per original model, cached; declared as ``train_stats``): for every
   ``nn.Conv2d`` / ``nn.Linear`` layer, ``R R^T`` of its input representations over the full training set D in
   float64 (conv inputs as ``F.unfold`` patches with stride 1, feature order (C_in, kh, kw) = ``weight.view(C_out,
   -1)``), plus the class counts of D (for ``mode="auto"``). No training data reaches ``unlearn``.
2. Retain space without D_r (paper eq. 3): ``M = R R^T - C_f``, with ``C_f`` computed on D_f with the current
   model; symmetric ``torch.linalg.eigh``, eigenvalues clamped at 0 and sorted descending (the reference's
   ``torch.svd`` returns ``|lambda|`` for an indefinite ``M``); singular values = sqrt(eigenvalues).
3. Core gradient space: ``k`` by the energy criterion on singular values (not their squares) with threshold
   gamma (``core_rank``: rule "le" for sample removal, "le+1" for class removal, "lt" for de-poisoning, as in
   the three reference scripts); ``P = U_k U_k^T``; gamma = 1 freezes the layer. Every conv/linear layer must
   be covered (checked; the reference silently skips unmatched names).
4. Loss (eq. (1) as coded): ``mean(-log(1 - (p_y - eps))) - lam * mean(H(p))`` (reverse cross-entropy
   shifted by eps, plus entropy maximisation with weight lam); the de-poisoning variant (``depoison=True``)
   uses ``depoisoning.py``'s second term, ``+ mean H(softmax over the non-true classes)``, with lam < 0 preset.
5. Projected manual SGD on conv/linear *weights* only (biases and BatchNorm affine parameters never change;
   BatchNorm running statistics frozen): ``g <- g + wd * w``; ``g <- g - (g.view(C_out, -1) @ P).view_as(g)``;
   ``w <- w - lr * g``. Exponential lr decay ``lr_e = start_lr * alpha^e``, ``alpha = (end_lr/start_lr)^(1/E)``;
   epoch 0 only evaluates (as in the reference loop).
6. Early stopping: sample removal uses ``gap = acc(validation) - acc(D_f)`` and, at the first epoch with
   gap > 0, keeps whichever of this and the previous epoch has the smaller |gap|; class removal and
   de-poisoning stop once validation accuracy (class removal: on the non-forgotten classes) has dropped by more
   than ``early_stop_drop`` = 5 points.
7. Incremental unlearning: ``unlearn_sequence`` runs several deletions; the retain covariance of step t is the
   full statistics of step t+1 and later forget covariances use the already-unlearned model;
   ``gamma_step`` raises gamma at each later step (``retained_var_step``).

Hyperparameters (``preset``; any explicit value overrides it): ``paper`` = SmallVGG/CIFAR-10 data removal
(gamma 0.95, start_lr 0.05, end_lr 0.01, 100 epochs, eps 0.05, lam 0.2, bs 128; de-poisoning: start_lr 0.1,
end_lr 0.05, eps 0.1), from ``exp/unlearned/*/config.yaml``; ``digits`` (gamma 0.8, lr 0.5 -> 0.1, bs 32) was
calibrated on the digits MLP; ``fmnist`` currently equals ``paper`` (a calibration grid on Fashion-MNIST was
started but not finished in the session that wrote this module).

Data needs: ``train_stats`` and ``validation`` (early stopping). Never the retain set.

Decisions:
- [DECISION] Representations are collected in eval mode (dropout off); the reference keeps dropout active.
- [DECISION] Class removal stops on validation accuracy of the remaining classes instead of the reference's
  retain-train accuracy, because PGU must not read D_r.
- [DECISION] ``mode="auto"``: class removal when D_f holds every training example of its classes (from the
  cached class counts), sample removal otherwise.
- [DECISION] If the gap is already positive before unlearning (the reference calls ``exit()``), the model is
  returned unchanged with a ``RuntimeWarning`` and ``last_steps`` records the reason.
- Not reproduced: the reference de-poisoning network ``SmallVGG_v1`` with learnable GPM-style scale matrices; the
  de-poisoning variant here uses the plain projection.
"""
from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from muaudit.base import MethodContext, MethodData, UnlearningMethod
from muaudit.data import Split
from muaudit.errors import ParameterError
from muaudit.params import Choice, Interval, Param
from muaudit.training import predict_logits, progress_bar

#: Prefix of the per-layer covariance entries in the train statistics (``"cov/" + layer name``).
COV = "cov/"
#: Train-statistics entry holding the number of training examples per class (for ``mode="auto"``).
CLASS_COUNTS = "class_counts"
#: Mini-batch size of the covariance passes (only the float summation order depends on it).
STATS_BATCH = 256
#: Largest number of float64 patch entries materialised at once by the conv covariance (about 128 MB).
PATCH_BUDGET = 16 * 2**20
#: Entropy log offsets of the reference: 1e-15 in unlearn.py / unlearn_class.py, 1e-10 in depoisoning.py.
LOG_EPS_UNLEARN = 1e-15
LOG_EPS_DEPOISON = 1e-10
#: Largest dimension whose CPU eigendecomposition runs single-threaded (see :func:`_few_threads`).
SMALL_EIGH = 1024

_SETTINGS = ("gamma", "start_lr", "end_lr", "epochs", "epsilon", "lam", "batch_size")

#: Per (preset, depoison) defaults; see the module docstring for their sources.
PRESETS: dict[tuple[str, bool], dict[str, float]] = {
    ("paper", False): {"gamma": 0.95, "start_lr": 0.05, "end_lr": 0.01, "epochs": 100, "epsilon": 0.05,
                       "lam": 0.2, "batch_size": 128},
    ("paper", True): {"gamma": 0.95, "start_lr": 0.1, "end_lr": 0.05, "epochs": 100, "epsilon": 0.1,
                      "lam": -0.2, "batch_size": 128},
    ("digits", False): {"gamma": 0.8, "start_lr": 0.5, "end_lr": 0.1, "epochs": 100, "epsilon": 0.05,
                        "lam": 0.2, "batch_size": 32},
    ("digits", True): {"gamma": 0.8, "start_lr": 0.5, "end_lr": 0.1, "epochs": 100, "epsilon": 0.1,
                       "lam": -0.2, "batch_size": 32},
    ("fmnist", False): {"gamma": 0.95, "start_lr": 0.05, "end_lr": 0.01, "epochs": 100, "epsilon": 0.05,
                        "lam": 0.2, "batch_size": 128},
    ("fmnist", True): {"gamma": 0.95, "start_lr": 0.1, "end_lr": 0.05, "epochs": 100, "epsilon": 0.1,
                       "lam": -0.2, "batch_size": 128},
}


# ------------------------------------------------------------------------------- layers and covariances
def weight_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every ``nn.Conv2d`` and ``nn.Linear`` of ``model`` by qualified name (the layers PGU projects).

    Raises ``ValueError`` for convolutions PGU cannot represent (other dimensionalities, transposed or grouped
    convolutions, non-zero padding modes, ``padding="same"``), so that no weight layer is silently left out.
    """
    layers: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            layers[name] = module
        elif isinstance(module, nn.modules.conv._ConvNd):
            if not isinstance(module, nn.Conv2d) or module.transposed:
                raise ValueError(f"PGU supports nn.Conv2d and nn.Linear only; layer {name!r} is "
                                 f"{type(module).__name__}")
            if module.groups != 1 or module.padding_mode != "zeros" or module.padding == "same":
                raise ValueError(f"PGU needs ungrouped, zero-padded convolutions with explicit padding; layer "
                                 f"{name!r} has groups={module.groups}, padding={module.padding!r}, "
                                 f"padding_mode={module.padding_mode!r}")
            layers[name] = module
    if not layers:
        raise ValueError("PGU found no nn.Conv2d or nn.Linear layer in the model")
    return layers


def _conv_padding(conv: nn.Conv2d) -> tuple[int, int]:
    return (0, 0) if conv.padding == "valid" else (int(conv.padding[0]), int(conv.padding[1]))


def conv_patch_rows(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """The input-representation vectors of ``conv`` for input ``x``: one row per sample and spatial position.

    ``F.unfold`` with **stride 1** (as the reference, even for strided convolutions) and the layer's kernel size,
    padding and dilation; the feature order ``(C_in, kh, kw)`` matches ``conv.weight.view(C_out, -1)``.
    Returns a ``(N * L, C_in * kh * kw)`` float64 tensor.
    """
    patches = F.unfold(x.double(), conv.kernel_size, dilation=conv.dilation, padding=_conv_padding(conv), stride=1)
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])


def _conv_gram(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``sum_rows r r^T`` over :func:`conv_patch_rows`, in sample chunks that bound the float64 memory."""
    d = conv.weight[0].numel()
    (ph, pw), (dh, dw), (kh, kw) = _conv_padding(conv), conv.dilation, conv.kernel_size
    positions = max(1, (x.shape[2] + 2 * ph - dh * (kh - 1))) * max(1, (x.shape[3] + 2 * pw - dw * (kw - 1)))
    chunk = max(1, PATCH_BUDGET // (d * positions))
    gram = torch.zeros(d, d, dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], chunk):
        rows = conv_patch_rows(x[start:start + chunk], conv)
        gram += rows.T @ rows
    return gram


def _layer_gram(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(module, nn.Conv2d):
        return _conv_gram(x, module)
    rows = x.reshape(-1, x.shape[-1]).double()  # (any leading dims, in_features); no .squeeze() (batch of 1)
    return rows.T @ rows


@torch.no_grad()
def input_covariances(model: nn.Module, split: Split, device: torch.device,
                      batch_size: int = STATS_BATCH) -> dict[str, torch.Tensor]:
    """``R R^T`` (float64, on ``device``) of the input representations of every conv/linear layer over ``split``.

    Forward hooks read each layer's input; the model runs in eval mode (BatchNorm running statistics, dropout
    off) over ``split`` in stored order, without augmentation. The model's mode is restored afterwards.
    """
    layers = weight_layers(model)
    grams = {name: torch.zeros(m.weight[0].numel(), m.weight[0].numel(), dtype=torch.float64, device=device)
             for name, m in layers.items()}

    def hook(name: str):
        def accumulate(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            grams[name] += _layer_gram(module, inputs[0].detach())
        return accumulate

    handles = [m.register_forward_hook(hook(name)) for name, m in layers.items()]
    was_training = model.training
    model.eval()
    try:
        for x, _ in split.batches(batch_size):
            model(x.to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return grams


# ------------------------------------------------------------------------------------ the core space
def retain_eigen(full: torch.Tensor, forget: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvectors and eigenvalues of ``full - forget`` (eq. 3), eigenvalues clamped at 0, sorted descending.

    ``torch.linalg.eigh`` instead of the reference's ``torch.svd``: the difference can be slightly indefinite, and
    the SVD would then return ``|lambda|`` as singular values.
    """
    diff = full - forget
    with _few_threads(diff):
        values, vectors = torch.linalg.eigh(0.5 * (diff + diff.T))
    return vectors.flip(1), values.flip(0).clamp(min=0.0)


@contextmanager
def _few_threads(matrix: torch.Tensor) -> Iterator[None]:
    """Run a small CPU eigendecomposition single-threaded.

    LAPACK's tridiagonal reduction synchronises its OpenMP threads many times; on a busy machine a 128 x 128
    ``eigh`` then takes seconds instead of a millisecond. Matrices below :data:`SMALL_EIGH` gain nothing from
    threads, so the thread count is lowered for the call and restored afterwards.
    """
    threads = torch.get_num_threads()
    if matrix.device.type != "cpu" or matrix.shape[0] > SMALL_EIGH or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def core_rank(singular: torch.Tensor, gamma: float, rule: str) -> int:
    """Size ``k`` of the core gradient space from descending singular values (energy on sigma, not sigma^2).

    ``rule`` "le": ``sum(cumsum/total <= gamma)`` (unlearn.py); "le+1": the same plus one (unlearn_class.py);
    "lt": ``sum(cumsum/total < gamma)`` (depoisoning.py). Capped at the dimension; 0 when every value is 0.
    """
    total = float(singular.sum())
    if total <= 0.0:
        return 0
    ratio = torch.cumsum(singular, 0) / total
    k = int((ratio < gamma).sum()) if rule == "lt" else int((ratio <= gamma).sum())
    return min(k + (1 if rule == "le+1" else 0), singular.numel())


def parse_layer_gamma(text: str) -> dict[str, float]:
    """``"name=value,name=value"`` -> ``{name: value}`` (per-layer thresholds; 1.0 freezes a layer)."""
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.rpartition("=")
        try:
            gamma = float(value)
        except ValueError:
            gamma = math.nan
        if not sep or not name.strip() or not 0.0 <= gamma <= 1.0:
            raise ParameterError(f"PGU layer_gamma entries must be name=value with value in [0, 1]; got {item!r}")
        out[name.strip()] = gamma
    return out


# ---------------------------------------------------------------------------------------- the loss
def pgu_loss(logits: torch.Tensor, labels: torch.Tensor, epsilon: float, lam: float,
             depoison: bool = False) -> torch.Tensor:
    """Eq. (1), batch-averaged: ``mean_i[-log(1 - (p_iy - eps))] - lam * mean_i H(q_i)``.

    Unlearning: ``q = softmax(z)`` (``lam > 0`` maximises the entropy; log offset 1e-15). De-poisoning
    (depoisoning.py): ``q = softmax`` over the classes other than the given label (log offset 1e-10), and
    ``lam < 0`` minimises that entropy.
    """
    probs = torch.softmax(logits.float(), dim=1)
    p_true = probs.gather(1, labels.view(-1, 1)).squeeze(1)
    reverse_ce = -torch.log(1.0 - (p_true - epsilon)).mean()
    if depoison:
        mask = F.one_hot(labels, logits.shape[1]).bool()
        others = torch.softmax(logits.float().masked_fill(mask, -math.inf), dim=1)
        entropy = -(others * torch.log(others + LOG_EPS_DEPOISON)).sum(1)
    else:
        entropy = -(probs * torch.log(probs + LOG_EPS_UNLEARN)).sum(1)
    return reverse_ce - lam * entropy.mean()


# ------------------------------------------------------------------------------------------- helpers
def freeze_norm_stats(model: nn.Module) -> None:
    """Put every BatchNorm module in eval mode (running statistics frozen), the rest stays as it is."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def accuracy_percent(model: nn.Module, split: Split, device: torch.device) -> float:
    if len(split) == 0:
        return math.nan
    logits = predict_logits(model, split, device)
    return 100.0 * float((logits.argmax(1) == split.y).double().mean())


def concat_splits(splits: Sequence[Split]) -> Split:
    return Split(torch.cat([s.x for s in splits]), torch.cat([s.y for s in splits]))


def _mask_split(split: Split, keep: torch.Tensor) -> Split:
    return split.subset(torch.nonzero(keep).flatten().numpy())


@dataclass
class StepInfo:
    """Diagnostics of one deletion step (``PGU.last_steps``)."""

    mode: str
    step: int = 0
    ranks: dict[str, tuple[int, int]] = field(default_factory=dict)  # layer -> (k, d); frozen layers absent
    frozen: list[str] = field(default_factory=list)
    epochs_trained: int = 0
    stop_reason: str = ""
    history: list[dict[str, float]] = field(default_factory=list)
    kept_epoch: int = 0


@dataclass
class SequenceResult:
    """What :meth:`PGU.unlearn_sequence` returns: the model, the updated statistics and one info per step."""

    model: nn.Module
    train_stats: dict[str, torch.Tensor]
    steps: list[StepInfo]


# ------------------------------------------------------------------------------------------ the method
def _nullable(name: str, type_: type, help_: str, constraint: Interval | Choice | None = None) -> Param:
    return Param(name, type_, None, help_ + " (none = the preset's value)", constraint, nullable=True)


class PGU(UnlearningMethod):
    """Projected-gradient unlearning on D_f, orthogonal to the core input space of D_r (from D's statistics)."""

    name = "pgu"
    summary = ("Projected-Gradient Unlearning: reverse-CE + entropy on D_f, SGD projected orthogonal to the "
               "retain core space computed from full-data statistics minus D_f's.")
    paper = ("Hoang, Rana, Gupta and Venkatesh, 'Learn to Unlearn for Deep Neural Networks: Minimizing "
             "Unlearning Interference with Gradient Projection', WACV 2024 (code: hnanhtuan/"
             "projected_gradient_unlearning)")
    needs = frozenset({"train_stats", "validation"})
    params = (
        Param("preset", str, "paper", "default settings: paper (CIFAR-10 SmallVGG), digits or fmnist",
              Choice(("paper", "digits", "fmnist"))),
        Param("depoison", bool, False, "de-poisoning variant (depoisoning.py loss, lr and stopping rule)"),
        Param("mode", str, "auto", "sample or class removal (stopping rule, core rank, shuffling); auto = "
              "class removal when D_f holds every training example of its classes",
              Choice(("auto", "sample", "class"))),
        _nullable("gamma", float, "energy threshold gamma on singular values (1 = freeze every layer)",
                  Interval(0, 1)),
        Param("layer_gamma", str, "", "per-layer gamma overrides 'name=value,...' (1.0 freezes that layer)"),
        Param("gamma_step", float, 0.0, "added to gamma at each later step of unlearn_sequence "
              "(retained_var_step)", Interval(0, 1)),
        _nullable("start_lr", float, "learning rate of epoch 0 (exponential decay)",
                  Interval(0, None, closed="neither")),
        _nullable("end_lr", float, "learning rate reached after `epochs` epochs", Interval(0, None, closed="neither")),
        _nullable("epochs", int, "number of epochs, epoch 0 included (it only evaluates)", Interval(1, None)),
        _nullable("epsilon", float, "offset eps of the reverse cross-entropy", Interval(0, 1, closed="neither")),
        _nullable("lam", float, "entropy weight lambda (> 0 maximises the entropy; < 0 for de-poisoning)"),
        _nullable("batch_size", int, "mini-batch size over D_f", Interval(1, None)),
        Param("weight_decay", float, 0.0, "weight decay added to the gradient before projection (reference wd)",
              Interval(0, None)),
        Param("early_stop_drop", float, 5.0, "class removal / de-poisoning: stop once validation accuracy "
              "dropped by more than this many points (early_stop_thres)", Interval(0, None)),
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._layer_gamma = parse_layer_gamma(self.hparams["layer_gamma"])
        self.last_steps: list[StepInfo] = []

    # -------------------------------------------------------------------------------- settings
    def setting(self, key: str) -> Any:
        """The explicit value of ``key`` or, when ``None``, the (preset, depoison) default."""
        value = self.hparams[key]
        if value is not None:
            return value
        default = PRESETS[(self.hparams["preset"], self.hparams["depoison"])][key]
        return int(default) if key in ("epochs", "batch_size") else float(default)

    def gamma_for(self, layer: str, step: int) -> float:
        base = self._layer_gamma.get(layer, self.setting("gamma"))
        return min(1.0, base + self.hparams["gamma_step"] * step)

    # ------------------------------------------------------------------------------ train stats
    def train_stats_params(self) -> dict[str, Any]:
        return {"schema": 1, "collect": "eval-mode/no-augmentation/unfold-stride-1", "batch_size": STATS_BATCH}

    def compute_train_stats(self, model: nn.Module, train: Split, ctx: MethodContext) -> dict[str, torch.Tensor]:
        """``R R^T`` (float64) of every conv/linear layer's inputs over the full training set, and class counts."""
        model.to(ctx.device)
        grams = input_covariances(model, train, ctx.device)
        stats = {COV + name: gram.cpu() for name, gram in grams.items()}
        stats[CLASS_COUNTS] = torch.bincount(train.y.long(), minlength=ctx.n_classes)
        return stats

    # ---------------------------------------------------------------------------------- unlearn
    def unlearn(self, model: nn.Module, data: MethodData, ctx: MethodContext) -> nn.Module:
        self.last_steps = []
        model, _, info = self._step(model, data.train_stats, data.forget, data.forget, data.validation, ctx, 0)
        self.last_steps.append(info)
        return model.eval()

    def unlearn_sequence(self, model: nn.Module, forget_sets: Sequence[Split],
                         train_stats: Mapping[str, torch.Tensor], validation: Split,
                         ctx: MethodContext) -> SequenceResult:
        """Incremental unlearning (Section 3.2.4): delete ``forget_sets`` one after another.

        Step ``t`` starts from the model returned by step ``t-1`` and uses its retain statistics
        ``R_r R_r^T = R R^T - R_f R_f^T`` as the "full" statistics; the forget covariance of step ``t`` is
        computed on the already-unlearned model (as ``current_svd = retain_svd`` in unlearn.py). gamma grows by
        ``gamma_step`` per step. Sample-removal stopping measures the forget accuracy on the union of all forget
        sets so far. ``model`` is modified in place; the returned statistics describe the remaining data and
        can be fed to a later call.
        """
        self.last_steps = []
        stats: Mapping[str, torch.Tensor] = train_stats
        for step, forget in enumerate(forget_sets):
            cumulative = concat_splits(list(forget_sets[:step + 1]))
            model, stats, info = self._step(model, stats, forget, cumulative, validation, ctx, step)
            self.last_steps.append(info)
        return SequenceResult(model.eval(), dict(stats), list(self.last_steps))

    # ------------------------------------------------------------------------------- one step
    def _step(self, model: nn.Module, stats: Mapping[str, torch.Tensor], forget: Split, cumulative: Split,
              validation: Split, ctx: MethodContext, step: int
              ) -> tuple[nn.Module, dict[str, torch.Tensor], StepInfo]:
        model.to(ctx.device)
        layers = weight_layers(model)
        self._check_coverage(layers, stats)
        unknown = sorted(set(self._layer_gamma) - set(layers))
        if unknown:
            raise ParameterError(f"PGU layer_gamma names unknown layers {unknown}; layers: {sorted(layers)}")
        counts = stats.get(CLASS_COUNTS)
        if len(forget) == 0:
            return model, dict(stats), StepInfo(mode="none", step=step, stop_reason="empty-forget-set")
        info = StepInfo(mode=self._resolve_mode(forget, counts), step=step)
        forget_grams = input_covariances(model, forget, ctx.device)
        rule = {"sample": "le", "class": "le+1", "depoison": "lt"}[info.mode]
        projections: dict[str, torch.Tensor] = {}
        new_stats: dict[str, torch.Tensor] = {}
        for name in layers:
            vectors, values = retain_eigen(stats[COV + name].to(ctx.device, torch.float64), forget_grams[name])
            retained = (vectors * values) @ vectors.T
            new_stats[COV + name] = (0.5 * (retained + retained.T)).cpu()
            gamma = self.gamma_for(name, step)
            if gamma >= 1.0:
                info.frozen.append(name)
                continue
            k = core_rank(values.sqrt(), gamma, rule)
            basis = vectors[:, :k]
            projections[name] = (basis @ basis.T).float()
            info.ranks[name] = (k, values.numel())
        removed: set[int] = set(int(c) for c in forget.y.unique())
        if counts is not None:
            remaining = counts.cpu() - torch.bincount(forget.y.long(), minlength=counts.numel())[:counts.numel()]
            new_stats[CLASS_COUNTS] = remaining
            removed = set(int(c) for c in torch.nonzero(remaining <= 0).flatten())
        self._train(model, layers, projections, forget, cumulative, validation, removed, ctx, info)
        return model, new_stats, info

    @staticmethod
    def _check_coverage(layers: Mapping[str, nn.Module], stats: Mapping[str, torch.Tensor]) -> None:
        have = {key[len(COV):] for key in stats if key.startswith(COV)}
        if have != set(layers):
            raise ValueError(f"PGU train statistics do not match the model's conv/linear layers: missing "
                             f"{sorted(set(layers) - have)}, unexpected {sorted(have - set(layers))}")
        for name, module in layers.items():
            d = module.weight[0].numel()
            if tuple(stats[COV + name].shape) != (d, d):
                raise ValueError(f"PGU train statistics of layer {name!r} have shape "
                                 f"{tuple(stats[COV + name].shape)}, expected {(d, d)}")

    def _resolve_mode(self, forget: Split, counts: torch.Tensor | None) -> str:
        if self.hparams["depoison"]:
            return "depoison"
        if self.hparams["mode"] != "auto":
            return str(self.hparams["mode"])
        labels = forget.y.long()
        if counts is None:
            return "class" if labels.unique().numel() == 1 else "sample"
        present = labels.unique()
        if int(present.max()) >= counts.numel():
            return "sample"
        forget_counts = torch.bincount(labels, minlength=counts.numel())
        return "class" if bool((forget_counts[present] == counts.cpu()[present]).all()) else "sample"

    # ------------------------------------------------------------------------------ training
    def _train(self, model: nn.Module, layers: Mapping[str, nn.Module], projections: Mapping[str, torch.Tensor],
               forget: Split, cumulative: Split, validation: Split, removed: set[int], ctx: MethodContext,
               info: StepInfo) -> None:
        """Projected manual SGD with exponential lr decay and the mode's early stopping (in place)."""
        weights = {name: layers[name].weight for name in projections}
        epochs, start_lr, end_lr = self.setting("epochs"), self.setting("start_lr"), self.setting("end_lr")
        alpha = math.exp(math.log(end_lr / start_lr) / epochs)
        retained_val = _mask_split(validation, ~torch.isin(validation.y, torch.tensor(sorted(removed), dtype=torch.long)))
        gen = ctx.generator("order", info.step)
        snapshot: dict[str, torch.Tensor] | None = None
        prev_gap = math.nan
        with progress_bar(epochs, ctx.progress) as bar:
            for epoch in range(epochs):
                if epoch > 0:  # epoch 0 only evaluates (as in the reference loop)
                    self._train_epoch(model, weights, projections, forget, start_lr * alpha ** epoch, gen, info)
                    info.epochs_trained += 1
                bar.update(1)
                record = self._evaluate(model, forget, cumulative, validation, retained_val, ctx.device, epoch, info)
                if info.mode == "sample":
                    gap = record["val_acc"] - record["forget_acc"]
                    if gap > 0:
                        if epoch == 0:
                            info.stop_reason = "gap-positive-at-start"
                            warnings.warn("PGU: validation accuracy already exceeds the forget accuracy before "
                                          "unlearning (the reference 'unlearning too fast' exit); the model is "
                                          "returned unchanged", RuntimeWarning, stacklevel=3)
                            return
                        if not abs(gap) < abs(prev_gap) and snapshot is not None:
                            self._restore(weights, snapshot)
                            info.kept_epoch = epoch - 1
                        else:
                            info.kept_epoch = epoch
                        info.stop_reason = "gap-positive"
                        return
                    prev_gap = gap
                    snapshot = {name: w.detach().clone() for name, w in weights.items()}
                else:
                    key = "retained_val_acc" if info.mode == "class" else "val_acc"
                    drop = info.history[0][key] - record[key]
                    if drop > self.hparams["early_stop_drop"]:
                        info.kept_epoch, info.stop_reason = epoch, "validation-drop"
                        return
                info.kept_epoch = epoch
                if not weights:
                    info.stop_reason = "all-layers-frozen"
                    return
        info.stop_reason = "max-epochs"

    def _train_epoch(self, model: nn.Module, weights: Mapping[str, nn.Parameter],
                     projections: Mapping[str, torch.Tensor], forget: Split, lr: float, gen: torch.Generator,
                     info: StepInfo) -> None:
        model.train()
        freeze_norm_stats(model)
        params = list(weights.values())
        shuffle = info.mode != "sample"  # unlearn.py: shuffle=False; unlearn_class.py: shuffle=True
        depoison, epsilon, lam = info.mode == "depoison", self.setting("epsilon"), self.setting("lam")
        device = params[0].device
        for x, y in forget.batches(self.setting("batch_size"), shuffle=shuffle, generator=gen):
            loss = pgu_loss(model(x.to(device)), y.to(device), epsilon, lam, depoison)
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for (name, weight), grad in zip(weights.items(), grads):
                    grad = grad + self.hparams["weight_decay"] * weight
                    flat = grad.reshape(grad.shape[0], -1)
                    grad = (flat - flat @ projections[name]).view_as(weight)
                    weight.sub_(lr * grad)

    @staticmethod
    def _restore(weights: Mapping[str, nn.Parameter], snapshot: Mapping[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, weight in weights.items():
                weight.copy_(snapshot[name])

    @staticmethod
    def _evaluate(model: nn.Module, forget: Split, cumulative: Split, validation: Split, retained_val: Split,
                  device: torch.device, epoch: int, info: StepInfo) -> dict[str, float]:
        model.eval()
        record = {"epoch": float(epoch), "forget_acc": accuracy_percent(model, cumulative, device),
                  "val_acc": accuracy_percent(model, validation, device),
                  "retained_val_acc": accuracy_percent(model, retained_val, device)}
        info.history.append(record)
        return record
