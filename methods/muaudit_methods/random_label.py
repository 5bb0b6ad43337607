"""``random-label``: relabel D_f at random and fine-tune on it together with D_r (RL / "Amnesiac").

Papers: Graves, Nagisetty and Ganesh, "Amnesiac Machine Learning", AAAI 2021 (relabelling); the RL baseline of
Golatkar et al. and of Fan et al., "SalUn", ICLR 2024. Reference code: SSD ``if-loops/selective-synaptic-dampening``
(``forget_*_strategies.py::amnesiac``, ``unlearn.py::fit_one_unlearning_cycle``) and SalUn
``OPTML-Group/Unlearn-Saliency`` (``Classification/unlearn/RL.py``, ``unlearn/impl.py``).

Update rule: minimise ``CE(f(x), y~)`` over D_f with random labels ``y~`` together with ``CE(f(x), y)`` over D_r.
Three variants (``variant``), each with its own published settings:

- ``amnesiac`` (SSD, the default): every forget example gets one random label drawn once, uniformly from the
  classes other than its own label (SSD random forgetting; ``exclude="own-label"``) or other than the forgotten
  class (SSD full-class and sub-class forgetting, ``unlearninglabels.remove(forget_class)``;
  ``exclude="forget-classes"`` removes every class present in D_f). The relabelled D_f is concatenated with all
  of D_r and shuffled every epoch; batch 128, **Adam lr 1e-4 (no weight decay), 3 epochs**.
- ``salun`` (SalUn ``RL.py``, CIFAR-10/SVHN branch): every epoch first iterates all (shuffled) forget batches
  with fresh labels ``torch.randint(0, K)`` (which may equal the true label), one step per batch, then all
  (shuffled) retain batches. SGD momentum 0.9, weight decay 5e-4, batch 256, 10 epochs (SalUn
  ``iterative_unlearn``; its MultiStepLR milestones 91/136 never fire in 10 epochs, so the lr is constant).
- ``salun-shuffled`` (SalUn ``RL.py``, CIFAR-100/TinyImageNet branch): labels ``randint(0, K)`` are redrawn for
  all of D_f every epoch, concatenated with D_r and shuffled; same optimiser as ``salun``.

With the exclusion rules both SSD branches draw identical label distributions whenever D_f holds a single class
(full-class and sub-class forgetting), so ``exclude`` only matters for a multi-class D_f.

Hyperparameters: ``variant`` ("amnesiac"), ``exclude`` ("own-label"; amnesiac only), and ``optimizer``,
``lr``, ``epochs``, ``batch_size``, ``momentum``, ``weight_decay``, each ``None`` by default, meaning the
variant's published value listed above. For the SalUn variants the lr defaults to 0.013, the SalUn README's lr
for SalUn (RL with a saliency mask) on CIFAR-10; the README leaves plain RL's lr as a placeholder.

Data needs: the retain set. Random labels come from ``ctx.generator`` (deterministic for a fixed seed).

Decisions:
- [DECISION] The model trains in train mode in every variant (SSD ``fit_one_unlearning_cycle`` and SalUn both
  call ``model.train()``).
- [DECISION] SSD draws labels with Python's ``random.choice`` in a rejection loop; the same distribution (uniform
  over the allowed classes) is drawn here from a seeded torch generator.
- [DECISION] ``exclude="forget-classes"`` with a D_f that covers every class leaves no label to draw and is
  refused with a ParameterError rather than silently falling back.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from muaudit.base import MethodContext, MethodData, UnlearningMethod
from muaudit.data import Split
from muaudit.errors import ParameterError
from muaudit.params import Choice, Interval, Param, Search
from muaudit.presets import preset_param
from muaudit.training import progress_bar

VARIANTS = ("amnesiac", "salun", "salun-shuffled")

#: The published settings of each variant (see the module docstring).
VARIANT_DEFAULTS: dict[str, dict[str, object]] = {
    "amnesiac": {"optimizer": "adam", "lr": 1e-4, "epochs": 3, "batch_size": 128, "momentum": 0.0,
                 "weight_decay": 0.0},
    "salun": {"optimizer": "sgd", "lr": 0.013, "epochs": 10, "batch_size": 256, "momentum": 0.9,
              "weight_decay": 5e-4},
    "salun-shuffled": {"optimizer": "sgd", "lr": 0.013, "epochs": 10, "batch_size": 256, "momentum": 0.9,
                       "weight_decay": 5e-4},
}

Batch = tuple[torch.Tensor, torch.Tensor]
StepHook = Callable[[], None]


# ----------------------------------------------------------------------------------------- label draws
def labels_other_than_own(y: torch.Tensor, n_classes: int, gen: torch.Generator) -> torch.Tensor:
    """Uniform labels over the classes different from each example's own label."""
    shift = torch.randint(1, n_classes, y.shape, generator=gen)
    return (y + shift) % n_classes


def labels_outside_classes(y: torch.Tensor, n_classes: int, gen: torch.Generator) -> torch.Tensor:
    """Uniform labels over the classes that do not occur in ``y`` (SSD class-forgetting rule)."""
    present = set(int(c) for c in torch.unique(y))
    allowed = torch.tensor([c for c in range(n_classes) if c not in present], dtype=torch.int64)
    if allowed.numel() == 0:
        raise ParameterError("random-label: exclude='forget-classes' leaves no class to relabel with, because the "
                             "forget set contains every class; use exclude='own-label'.")
    return allowed[torch.randint(0, allowed.numel(), y.shape, generator=gen)]


def uniform_labels(y: torch.Tensor, n_classes: int, gen: torch.Generator) -> torch.Tensor:
    """``torch.randint(0, K)`` labels, which may equal the true label (SalUn)."""
    return torch.randint(0, n_classes, y.shape, generator=gen)


# ------------------------------------------------------------------------------------------- batching
def mixed_batches(forget: Split, forget_labels: torch.Tensor, retain: Split, batch_size: int,
                  gen: torch.Generator) -> Iterator[Batch]:
    """Shuffled batches of the concatenation of relabelled D_f and D_r (without copying D_r)."""
    n_f, n = len(forget), len(forget) + len(retain)
    order = torch.randperm(n, generator=gen)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        f_idx, r_idx = idx[idx < n_f], idx[idx >= n_f] - n_f
        x = torch.cat([forget.x[f_idx], retain.x[r_idx]])
        y = torch.cat([forget_labels[f_idx], retain.y[r_idx]])
        yield x, y


def forget_then_retain_batches(forget: Split, retain: Split, n_classes: int, batch_size: int,
                               gen: torch.Generator) -> Iterator[Batch]:
    """SalUn CIFAR-10 order: all forget batches with fresh ``randint(0, K)`` labels, then all retain batches."""
    for x, y in forget.batches(batch_size, shuffle=True, generator=gen):
        yield x, uniform_labels(y, n_classes, gen)
    yield from retain.batches(batch_size, shuffle=True, generator=gen)


def epoch_batches(variant: str, forget: Split, retain: Split, fixed_labels: torch.Tensor | None, n_classes: int,
                  batch_size: int, gen: torch.Generator) -> Iterator[Batch]:
    """The batches of one epoch of ``variant``; ``fixed_labels`` (amnesiac) are kept for every epoch."""
    if variant == "salun":
        return forget_then_retain_batches(forget, retain, n_classes, batch_size, gen)
    labels = fixed_labels if fixed_labels is not None else uniform_labels(forget.y, n_classes, gen)
    return mixed_batches(forget, labels, retain, batch_size, gen)


def n_batches(variant: str, n_forget: int, n_retain: int, batch_size: int) -> int:
    if variant == "salun":
        return math.ceil(n_forget / batch_size) + math.ceil(n_retain / batch_size)
    return math.ceil((n_forget + n_retain) / batch_size)


# --------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class RLSettings:
    """Resolved settings of one random-label run."""

    variant: str
    exclude: str
    optimizer: str
    lr: float
    epochs: int
    batch_size: int
    momentum: float
    weight_decay: float

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum,
                               weight_decay=self.weight_decay)


def resolve_settings(hparams: dict[str, object]) -> RLSettings:
    """Fill every ``None`` hyperparameter with the value of the chosen variant."""
    variant = str(hparams["variant"])
    values = {k: (VARIANT_DEFAULTS[variant][k] if hparams.get(k) is None else hparams[k])
              for k in VARIANT_DEFAULTS[variant]}
    return RLSettings(variant=variant, exclude=str(hparams.get("exclude", "own-label")), **values)  # type: ignore[arg-type]


def run_random_label(model: nn.Module, forget: Split, retain: Split, settings: RLSettings, ctx: MethodContext,
                     after_backward: StepHook | None = None,
                     after_step: Callable[[torch.optim.Optimizer], None] | None = None) -> nn.Module:
    """Train ``model`` in place with random-label unlearning; hooks let SalUn mask gradients and re-pin weights."""
    model.to(ctx.device).train()
    opt = settings.make_optimizer(model)
    gen = ctx.generator("random-label")
    fixed = None
    if settings.variant == "amnesiac":
        draw = labels_other_than_own if settings.exclude == "own-label" else labels_outside_classes
        fixed = draw(forget.y, ctx.n_classes, gen)
    loss_fn = nn.CrossEntropyLoss()
    total = settings.epochs * n_batches(settings.variant, len(forget), len(retain), settings.batch_size)
    with progress_bar(total, ctx.progress) as bar:
        for _ in range(settings.epochs):
            for x, y in epoch_batches(settings.variant, forget, retain, fixed, ctx.n_classes,
                                      settings.batch_size, gen):
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x.to(ctx.device)), y.to(ctx.device)).backward()
                if after_backward is not None:
                    after_backward()
                opt.step()
                if after_step is not None:
                    after_step(opt)
                bar.update(1)
    return model.eval()


def _nullable(name: str, type_: type, help_: str, constraint: Interval | Choice, search: Search | None = None
              ) -> Param:
    return Param(name, type_, None, help_ + " (none = the variant's published value)", constraint, nullable=True,
                 search=search)


#: Optimiser parameters shared with SalUn, whose defaults come from the chosen variant.
OPTIMISER_PARAMS: tuple[Param, ...] = (
    _nullable("optimizer", str, "optimiser", Choice(("adam", "sgd"))),
    _nullable("lr", float, "learning rate", Interval(0, None, closed="neither"), Search(1e-5, 0.1, log=True)),
    _nullable("epochs", int, "epochs", Interval(1, None), Search(1, 20)),
    _nullable("batch_size", int, "mini-batch size", Interval(1, None)),
    _nullable("momentum", float, "SGD momentum", Interval(0, 1, closed="left")),
    _nullable("weight_decay", float, "weight decay", Interval(0, None)),
)


#: Named presets; "paper" leaves every optimiser setting to the variant's published values.
PRESETS: dict[str, dict[str, object]] = {
    "paper": {},
    "digits": {"lr": 1e-3, "epochs": 5},
    "digits-class": {"lr": 1.71e-3, "epochs": 18},
    "fmnist": {"lr": 1e-3, "epochs": 2},
    "fmnist-class": {"lr": 3e-4, "epochs": 3},
}


class RandomLabel(UnlearningMethod):
    """Fine-tune on D_f with random labels together with D_r."""

    name = "random-label"
    summary = "Random-label (Amnesiac / RL): relabel D_f at random and fine-tune on it with D_r."
    paper = ("Graves et al., Amnesiac Machine Learning, AAAI 2021; RL baseline as in SSD (Foster et al., AAAI 2024) "
             "and SalUn (Fan et al., ICLR 2024)")
    needs = frozenset({"retain"})
    presets = PRESETS
    params = (
        preset_param(PRESETS),
        Param("variant", str, "amnesiac", "amnesiac (SSD), salun (SalUn CIFAR-10: forget batches first) or "
              "salun-shuffled (SalUn CIFAR-100: mixed)", Choice(VARIANTS)),
        Param("exclude", str, "own-label", "amnesiac labels avoid each example's own label, or every class "
              "present in D_f", Choice(("own-label", "forget-classes"))),
        *OPTIMISER_PARAMS,
    )

    def unlearn(self, model: nn.Module, data: MethodData, ctx: MethodContext) -> nn.Module:
        settings = resolve_settings(self.hparams.as_dict())
        return run_random_label(model, data.forget, data.retain, settings, ctx)
