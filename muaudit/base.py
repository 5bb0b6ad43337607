"""The plugin contracts: unlearning methods and membership-inference attacks.

A method is a class with declarations (``name``, ``summary``, ``paper``, ``needs``, ``params``) and an
:meth:`UnlearningMethod.unlearn` that receives a *copy* of the original model, a :class:`MethodData` holding only
the data it declared, and a :class:`MethodContext`. An attack is a class whose :meth:`MembershipAttack.score`
returns per-example membership scores (higher = member) from a model's :class:`ModelOutputs` and an
:class:`AttackContext` that, like :class:`MethodData`, only hands out what the attack declared in its ``needs``
(the shadow-model bank, the method under audit); metrics are computed centrally in :mod:`muaudit.metrics`, never
by the plugin.
"""
from __future__ import annotations

import functools
import math
import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import torch
from torch import nn

from muaudit.data import Split
from muaudit.errors import PluginValidationError, UndeclaredDataError
from muaudit.params import Param, ParamSet, validate_params
from muaudit.presets import AUTO, PresetChoice, Relative, TaskProfile, choose_preset
from muaudit.task import Recipe

#: What a method may declare beyond the forget set, which every method receives.
DATA_NEEDS: Mapping[str, str] = {
    "retain": "the retain set D_r = D \\ D_f",
    "validation": "the validation split (carved from the test split; held-out data)",
    "train_stats": "statistics of the full training set, computed once per original model by "
                   "compute_train_stats (the training data itself is never handed to unlearn)",
}


class MethodData:
    """The data a method may see: always the forget set, anything else only if declared.

    Undeclared data is never stored here, so a method cannot reach it; asking for it raises
    :class:`~muaudit.errors.UndeclaredDataError`.
    """

    def __init__(
        self,
        method: str,
        forget: Split,
        retain: Split | None = None,
        validation: Split | None = None,
        train_stats: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        self._method = method
        self._forget = forget
        self._items: dict[str, Any] = {
            k: v for k, v in (("retain", retain), ("validation", validation), ("train_stats", train_stats))
            if v is not None
        }

    @property
    def forget(self) -> Split:
        return self._forget

    def _get(self, need: str) -> Any:
        if need not in self._items:
            raise UndeclaredDataError(
                f"method {self._method!r} asked for {need!r} data but did not declare it in its 'needs'"
            )
        return self._items[need]

    @property
    def retain(self) -> Split:
        return self._get("retain")

    @property
    def validation(self) -> Split:
        return self._get("validation")

    @property
    def train_stats(self) -> Mapping[str, torch.Tensor]:
        return self._get("train_stats")


@dataclass(frozen=True)
class MethodContext:
    """What a method may know about the run besides data: device, seed, the task's recipe, model factory.

    ``fresh_model(seed)`` builds the task's architecture with every layer freshly initialised (used by
    ``retrain`` and by methods that need an incompetent teacher). ``progress`` is a label for progress bars, or
    ``None`` for silence. ``task`` is the :class:`~muaudit.presets.TaskProfile` (the task's scale, never its
    data) from which a ``preset="auto"`` default is resolved.
    """

    device: torch.device
    seed: int
    recipe: Recipe
    n_classes: int
    input_shape: tuple[int, ...]
    fresh_model: Callable[[int], nn.Module]
    progress: str | None = None
    task: TaskProfile | None = None

    def generator(self, *labels: object) -> torch.Generator:
        """A CPU generator seeded from the run seed and ``labels``."""
        from muaudit.training import derive_seed, generator

        return generator(derive_seed(self.seed, *labels))


class _Plugin:
    """Shared declaration handling for methods and attacks."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()

    def __init__(self, **params: Any) -> None:
        self.hparams: ParamSet = validate_params(self.display_name(), self.params, params)

    @classmethod
    def display_name(cls) -> str:
        return cls.name or cls.__name__


#: A diagnostic value: a JSON scalar or a (nested) list of them.
Diagnostic = None | bool | int | float | str | list[Any]


def diagnostic_value(method: str, key: str, value: Any) -> Diagnostic:
    """``value`` as a JSON value (tuples to lists, NumPy scalars to Python numbers), or a
    :class:`~muaudit.errors.PluginValidationError` naming the method and key if it is anything else."""
    if not isinstance(key, str) or not key.isidentifier():
        raise PluginValidationError(f"method {method!r}: diagnostic key {key!r} must be an identifier string")
    if isinstance(value, (list, tuple)):
        return [diagnostic_value(method, key, v) for v in value]
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        value = value.item()  # a NumPy or 0-d torch scalar
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(value):
        return float(value)
    raise PluginValidationError(f"method {method!r}: diagnostic {key!r} must be a finite number, a bool, a string, "
                                f"None or a list of these, got {value!r} ({type(value).__name__})")


class UnlearningMethod(_Plugin, ABC):
    """Base class of unlearning methods (entry-point group ``muaudit.methods``).

    Presets: a method may declare named value sets in :attr:`presets` and a ``preset`` parameter. A concrete
    preset name fills every parameter the caller did not give (or gave as ``None``); ``"auto"`` is resolved
    from the task's :class:`~muaudit.presets.TaskProfile` by :meth:`auto_preset` (see :mod:`muaudit.presets`),
    either by the audit (:meth:`for_task`) or, at the latest, when :meth:`unlearn` receives a context with a
    task profile. ``hparams`` then holds concrete values and :attr:`preset_choice` says which preset and why.

    Diagnostics: :meth:`unlearn` may record what it did (iterations run, why it stopped, how many examples it
    selected, ...) with :meth:`report`; :attr:`diagnostics` is emptied at the start of every ``unlearn`` call and
    the audit records it in the scorecard (``method.diagnostics``).
    """

    #: Data beyond the forget set that the method needs: a subset of :data:`DATA_NEEDS`.
    needs: ClassVar[frozenset[str]] = frozenset()
    #: False for methods whose output legitimately varies for a fixed seed.
    deterministic: ClassVar[bool] = True
    #: Named presets: parameter name -> value (a :class:`~muaudit.presets.Relative` value follows the recipe).
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._given = dict(params)
        self.preset_choice: PresetChoice | None = None
        #: What the last :meth:`unlearn` reported with :meth:`report` (JSON values only).
        self.diagnostics: dict[str, Diagnostic] = {}
        if self.preset_pending and self.hparams["preset"] != AUTO:
            self._apply_preset(self.hparams["preset"], "chosen explicitly", None)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Wrap each ``unlearn`` so that a still-pending ``"auto"`` preset is resolved from ``ctx.task`` first."""
        super().__init_subclass__(**kwargs)
        impl = cls.__dict__.get("unlearn")
        if impl is None or getattr(impl, "__isabstractmethod__", False) or getattr(impl, "_resolves_preset", False):
            return

        @functools.wraps(impl)
        def unlearn(self: UnlearningMethod, model: nn.Module, data: MethodData, ctx: MethodContext) -> nn.Module:
            if self.preset_pending:
                self.for_task(ctx.task)
            self.diagnostics = {}
            return impl(self, model, data, ctx)

        unlearn._resolves_preset = True  # type: ignore[attr-defined]
        cls.unlearn = unlearn  # type: ignore[method-assign]

    def report(self, **values: Any) -> None:
        """Record diagnostics of the current run (e.g. ``self.report(iterations=12, stop_reason="chance")``).

        Values must be JSON scalars (finite numbers, bools, strings, ``None``) or lists of them; anything else
        raises :class:`~muaudit.errors.PluginValidationError`. A key reported twice keeps its last value.
        """
        name = self.display_name()
        self.diagnostics.update({k: diagnostic_value(name, k, v) for k, v in values.items()})

    # ------------------------------------------------------------------------------------ presets
    @property
    def preset_pending(self) -> bool:
        """True while a declared ``preset`` parameter has not yet filled the other parameters."""
        return bool(self.presets) and "preset" in self.hparams.values and self.preset_choice is None

    @classmethod
    def auto_preset(cls, profile: TaskProfile) -> PresetChoice:
        """The preset ``"auto"`` stands for on a task of this profile (default rule: :mod:`muaudit.presets`)."""
        return choose_preset(cls.presets, profile)

    def preset_values(self, name: str) -> Mapping[str, Any]:
        """The values of preset ``name`` (a method may adapt them to other parameters, e.g. a variant)."""
        return self.presets[name]

    def for_task(self, profile: TaskProfile | None) -> "UnlearningMethod":
        """Resolve a pending preset for ``profile`` in place (``"auto"`` via :meth:`auto_preset`); returns self."""
        from muaudit.errors import ParameterError

        if not self.preset_pending:
            return self
        name = self.hparams["preset"]
        if name == AUTO:
            if profile is None:
                raise ParameterError(f"{self.display_name()}: preset 'auto' needs the task profile; pass a preset "
                                     f"by name ({', '.join(self.presets)}) or run it through muaudit's audit")
            choice = self.auto_preset(profile)
            self._apply_preset(choice.name, choice.reason, profile)
        else:
            self._apply_preset(name, "chosen explicitly", profile)
        return self

    def _apply_preset(self, name: str, reason: str, profile: TaskProfile | None) -> None:
        values = self.preset_values(name)
        if profile is None and any(isinstance(v, Relative) for v in values.values()):
            return  # recipe-relative values wait for the task
        kinds = {p.name: p.type for p in self.params}
        filled = {k: (v.resolve(profile, kinds[k]) if isinstance(v, Relative) else v) for k, v in values.items()
                  if self._given.get(k) is None}
        explicit = {k: v for k, v in self._given.items() if v is not None}
        self.hparams = validate_params(self.display_name(), self.params, {**filled, **explicit, "preset": name})
        self.preset_choice = PresetChoice(name, reason)

    @abstractmethod
    def unlearn(self, model: nn.Module, data: MethodData, ctx: MethodContext) -> nn.Module:
        """Return the unlearned model. ``model`` is already a private copy on ``ctx.device``."""

    def compute_train_stats(self, model: nn.Module, train: Split, ctx: MethodContext) -> dict[str, torch.Tensor]:
        """Statistics of the full training set for ``model`` (only for methods that declare ``train_stats``).

        Called once per original model and cached beside it, so that no training data is needed at deletion
        time. Must depend only on the model, the data and :meth:`train_stats_params`.
        """
        raise NotImplementedError(f"method {self.display_name()!r} declares no train_stats")

    def train_stats_params(self) -> dict[str, Any]:
        """The hyperparameters that :meth:`compute_train_stats` depends on (part of its cache key)."""
        return {}


@dataclass(frozen=True)
class ModelOutputs:
    """One model's logits and the labels on the forget, retain and test splits (CPU tensors)."""

    forget_logits: torch.Tensor
    forget_labels: torch.Tensor
    retain_logits: torch.Tensor
    retain_labels: torch.Tensor
    test_logits: torch.Tensor
    test_labels: torch.Tensor


@dataclass(frozen=True)
class AttackScores:
    """What an attack returns.

    ``members`` are the scores of the audited candidates (the forget set), ``nonmembers`` those of held-out
    examples never trained on (the test split); higher = more likely a member. ``threshold`` is the attack's own
    decision rule (score >= threshold means member) or ``None``. ``settings`` records every knob it used.
    """

    members: np.ndarray
    nonmembers: np.ndarray
    threshold: float | None
    settings: dict[str, Any] = field(default_factory=dict)


#: What an attack may declare beyond the audited model's outputs, which every attack receives.
ATTACK_NEEDS: Mapping[str, str] = {
    "shadows": "the shadow-model bank (extra models trained with the task's recipe, cached; costly)",
    "method": "the method under audit, to unlearn shadow models (U-LiRA)",
}

#: The roles of the audited models: an attack scores each of them with the same fitted machinery.
ROLES = ("unlearned", "original", "gold")


class AttackContext:
    """What an attack may use besides the audited model's outputs.

    ``seed`` fixes every random choice of the attack; ``role`` says which model is being scored (the unlearned
    model, the original or a gold model: the same attack is applied to each, for the gold-relative readouts);
    ``forget_indices`` are D_f's indices in the training split and ``n_classes`` the class count. The shadow bank
    and the method under audit are only reachable when declared in the attack's ``needs``; asking for anything
    else raises :class:`~muaudit.errors.UndeclaredDataError`. ``task`` and ``data`` describe the audit (the data
    the shadows train on); they are ``None`` in stand-alone use on outputs only.
    """

    def __init__(self, attack: str, seed: int, role: str = "unlearned", *, needs: frozenset[str] = frozenset(),
                 forget_indices: np.ndarray | None = None, n_classes: int | None = None, task: Any = None,
                 data: Any = None, bank: Any = None, unlearner: Any = None) -> None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
        self.attack, self.seed, self.role, self._needs = attack, int(seed), role, frozenset(needs)
        self.forget_indices = None if forget_indices is None else np.asarray(forget_indices, dtype=np.int64)
        self.n_classes, self.task, self.data = n_classes, task, data
        self._available = {"shadows": bank, "method": unlearner}

    def _get(self, need: str) -> Any:
        if need not in self._needs:
            raise UndeclaredDataError(
                f"attack {self.attack!r} asked for {need!r} but did not declare it in its 'needs'")
        value = self._available[need]
        if value is None:
            raise UndeclaredDataError(f"attack {self.attack!r} needs {need!r}, which this audit does not provide")
        return value

    @property
    def bank(self) -> Any:
        """The :class:`muaudit.shadows.ShadowBank` of this audit (needs ``"shadows"``)."""
        return self._get("shadows")

    @property
    def unlearner(self) -> Any:
        """The method under audit as a :class:`muaudit.shadows.ShadowUnlearner` (needs ``"method"``)."""
        return self._get("method")


class MembershipAttack(_Plugin, ABC):
    """Base class of membership-inference attacks (entry-point group ``muaudit.attacks``).

    An attack instance is used for every role of one audit (unlearned, original, gold models), so it may memoise
    work that does not depend on the scored model (fitted shadows, classifiers) on ``self``.
    """

    #: What the attack needs beyond the scored model's outputs: a subset of :data:`ATTACK_NEEDS`.
    needs: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def score(self, outputs: ModelOutputs, ctx: AttackContext) -> AttackScores:
        """Score the forget set (members) against held-out non-members from ``outputs`` (and ``ctx``)."""
