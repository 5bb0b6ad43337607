"""Task-matched method defaults: the task profile, named presets and the ``auto`` rule.

A method's published defaults were tuned for CIFAR ResNets trained for 200 epochs; on a 30-epoch MLP on 1,257
digits they mostly do nothing (or destroy the model). Every built-in method therefore declares named **presets**
(complete sets of values for its parameters) and a ``preset`` parameter whose default, ``"auto"``, is resolved
by the audit from the :class:`TaskProfile` of the task at hand:

1. the task's **scale family** (:func:`scale_family`):

   - ``digits``: a multi-layer perceptron (``mlp``), the scale of the named ``digits`` tasks (1,257 examples of
     8x8 pixels, 30 epochs);
   - ``fmnist``: the small CNN (``cnn``) on single-channel images of at most 28x28 pixels, the scale of the
     named Fashion-MNIST tasks;
   - ``paper``: everything else (CIFAR-scale colour images, ResNet-18, VGG, All-CNN), where the papers'
     published values apply.

   The architecture decides because it sets how far one update moves the model: a method's step sizes transfer
   between data sets of one architecture far better than between architectures;

2. the task's **removal kind** (:func:`removal_kind`): ``class`` (``full-class``, ``sub-class``: every example of
   a class goes), ``poison`` (``label-flip``) or ``sample`` (``random``, ``class-subset``, ``indices``);

3. the first preset the method declares among ``"{family}-{removal}"``, ``"{family}"`` and ``"paper"``.

The named tasks are instances of this rule, so "on a named task, that task's calibrated preset" and "on any other
task, the preset of its scale" are the same lookup: ``digits`` -> ``digits``, ``digits-class`` ->
``digits-class``, ``fashion-mnist-random`` -> ``fmnist``, and so on. A method may override
:meth:`~muaudit.base.UnlearningMethod.auto_preset` with its own rule; the reason of every choice is recorded in
the scorecard. Preset values may be :class:`Relative` to the task's recipe (``0.5 x recipe.lr``) so that they
follow a custom task's training schedule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from muaudit.errors import ParameterError

AUTO = "auto"
CLASS_KINDS = ("full-class", "sub-class")
POISON_KINDS = ("label-flip",)
MEDIUM_MAX_PIXELS = 28 * 28


@dataclass(frozen=True)
class TaskProfile:
    """What a method's defaults may depend on: the scale of the task, never its data.

    ``named`` is the name of the built-in task whose specification this task matches (dataset, forget set,
    architecture, recipe and seed; the display name and data root do not count), or ``None`` for a custom task.
    """

    name: str
    named: str | None
    dataset: str
    forget_kind: str
    n_forget: int
    n_train: int
    n_classes: int
    input_shape: tuple[int, ...]
    arch: str
    epochs: int
    lr: float
    batch_size: int

    @property
    def forget_fraction(self) -> float:
        return self.n_forget / max(self.n_train, 1)

    @property
    def family(self) -> str:
        return scale_family(self)

    @property
    def removal(self) -> str:
        return removal_kind(self.forget_kind)

    def describe(self) -> str:
        named = f"named task {self.named}" if self.named else "custom task"
        return (f"{named}: {self.n_train} training examples of shape {'x'.join(map(str, self.input_shape))}, "
                f"{self.arch}, {self.epochs} epochs at lr {self.lr:g}; {self.forget_kind} forget set of "
                f"{self.n_forget} -> scale {self.family}, {self.removal} removal")


def scale_family(profile: TaskProfile) -> str:
    """``digits``, ``fmnist`` or ``paper``: the named-task scale a task is closest to (module docstring)."""
    pixels = 1
    for dim in profile.input_shape[-2:]:
        pixels *= int(dim)
    channels = profile.input_shape[0] if len(profile.input_shape) == 3 else 1
    if profile.arch == "mlp":
        return "digits"
    if profile.arch == "cnn" and channels == 1 and pixels <= MEDIUM_MAX_PIXELS:
        return "fmnist"
    return "paper"


def removal_kind(forget_kind: str) -> str:
    """``class``, ``poison`` or ``sample`` removal."""
    if forget_kind in CLASS_KINDS:
        return "class"
    if forget_kind in POISON_KINDS:
        return "poison"
    return "sample"


@dataclass(frozen=True)
class PresetChoice:
    """The preset an ``auto`` default resolved to, and why."""

    name: str
    reason: str


def choose_preset(names: Mapping[str, Any] | tuple[str, ...], profile: TaskProfile) -> PresetChoice:
    """The default rule (module docstring) over the preset ``names`` a method declares."""
    family, removal = profile.family, profile.removal
    for candidate in (f"{family}-{removal}", family, "paper"):
        if candidate in names:
            return PresetChoice(candidate, f"{profile.describe()} -> preset {candidate!r}")
    raise ParameterError(f"no preset fits this task (tried {family}-{removal}, {family}, paper); declared: "
                         f"{', '.join(names) or 'none'}")


@dataclass(frozen=True)
class Relative:
    """A preset value given relative to the task's recipe, e.g. ``Relative("lr", 0.5)`` = half the recipe lr.

    ``field`` is ``"lr"``, ``"epochs"`` or ``"batch_size"`` of the task's recipe; integers are rounded, with a
    minimum of ``minimum``.
    """

    field: str
    factor: float
    minimum: float | None = None

    def resolve(self, profile: TaskProfile, kind: type) -> Any:
        value = getattr(profile, self.field) * self.factor
        if self.minimum is not None:
            value = max(value, self.minimum)
        return int(round(value)) if kind is int else float(value)

    def __str__(self) -> str:
        return f"{self.factor:g} x recipe {self.field}"


def profile_of(task: Any, data: Any) -> TaskProfile:
    """The :class:`TaskProfile` of a materialised ``task`` on its loaded ``data``."""
    from muaudit.task import named_match

    return TaskProfile(
        name=task.name, named=named_match(task), dataset=task.dataset.name, forget_kind=task.forget.kind,
        n_forget=len(task.forget_indices or ()), n_train=len(data.train), n_classes=int(data.n_classes),
        input_shape=tuple(int(s) for s in data.input_shape), arch=task.model.arch, epochs=task.recipe.epochs,
        lr=float(task.recipe.lr), batch_size=task.recipe.batch_size)


def preset_param(presets: Mapping[str, Any], help_text: str = "") -> Any:
    """The ``preset`` parameter of a method with these ``presets`` (default ``"auto"``: chosen for the task)."""
    from muaudit.params import Choice, Param

    text = help_text or "named defaults: " + ", ".join(presets)
    return Param("preset", str, AUTO, f"{text}; auto = chosen for the task (muaudit.presets)",
                 Choice((AUTO, *presets)))
