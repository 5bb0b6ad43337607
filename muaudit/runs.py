"""Method runs: a method applied to a private copy of the original model, with only the data it declared.

:func:`run_method` resolves the method's ``preset="auto"`` for the task, computes (and caches) the training-set
statistics it declared, hands it a :class:`~muaudit.base.MethodData` with nothing undeclared, times it and checks
what it returned. :class:`ShadowUnlearner` applies the same method to shadow models (U-LiRA).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from muaudit.base import MethodContext, MethodData, UnlearningMethod, diagnostic_value
from muaudit.checkpoint import load_into
from muaudit.data import Split
from muaudit.errors import CheckpointError, ParameterError, PluginValidationError
from muaudit.models import AuditSetup
from muaudit.plugins import LoadedPlugin
from muaudit.presets import TaskProfile
from muaudit.seal import clone_tensors, plugin_call, report_mutation, split_changes, tensors_changes
from muaudit.task import Recipe
from muaudit.training import ModelFactory, derive_seed


# ------------------------------------------------------------------------------------ method runs
@dataclass(frozen=True)
class MethodRun:
    """An unlearned model with the method's identity, parameters, seed, timing and diagnostics.

    ``diagnostics`` is what the method reported about its run (:meth:`~muaudit.base.UnlearningMethod.report`).
    """

    model: nn.Module
    plugin: LoadedPlugin
    params: dict[str, Any]
    seed: int
    seconds: float
    stats_seconds: float
    preset: dict[str, Any] | None = None
    tuning: dict[str, Any] | None = None  # set when the parameters came from muaudit.tune (its summary)
    diagnostics: dict[str, Any] | None = None


@dataclass(frozen=True)
class MethodEnvironment:
    """What any method of an audit may be handed besides its declared data: no training set, no models.

    ``validation`` is the audit's validation split, copied for each method that declares it.
    """

    device: torch.device
    recipe: Recipe
    n_classes: int
    input_shape: tuple[int, ...]
    factory: ModelFactory
    profile: TaskProfile
    validation: Split
    progress: bool = False

    @classmethod
    def of(cls, setup: AuditSetup) -> "MethodEnvironment":
        task, data = setup.task, setup.data
        return cls(setup.device, task.recipe, data.n_classes, tuple(data.input_shape),
                   ModelFactory.of(task, data, setup.device), setup.profile, data.val, setup.progress)


def method_context(setup: AuditSetup | MethodEnvironment, seed: int, label: str | None) -> MethodContext:
    """The :class:`MethodContext` of one run: ``fresh_model`` builds the architecture and holds no data."""
    env = setup if isinstance(setup, MethodEnvironment) else MethodEnvironment.of(setup)
    return MethodContext(device=env.device, seed=seed, recipe=env.recipe, n_classes=env.n_classes,
                         input_shape=env.input_shape, fresh_model=env.factory,
                         progress=label if env.progress else None, task=env.profile)


def instantiate(plugin: LoadedPlugin, params: dict[str, Any], profile: TaskProfile | None) -> UnlearningMethod:
    """The method with ``params``, its pending preset resolved for ``profile``.

    Plugin code runs here, so it is guarded; a :class:`~muaudit.errors.ParameterError` stays the caller's (a bad
    value given by the user, exit 2).
    """
    where = plugin.spec.describe()
    with plugin_call(where, "__init__", passthrough=(ParameterError,)):
        method: UnlearningMethod = plugin.cls(**params)
    with plugin_call(where, "auto_preset", passthrough=(ParameterError,)):
        return method.for_task(profile)


def _train_stats(setup: AuditSetup, method: UnlearningMethod, plugin: LoadedPlugin,
                 ctx: MethodContext) -> tuple[dict[str, torch.Tensor], float]:
    config = {"role": "train_stats", "method": plugin.spec.qualified_name, "version": plugin.spec.version,
              "original": setup.original_source["state_sha256"], "task_hash": setup.task.content_hash(),
              "params": method.train_stats_params()}
    hit = setup.cache.get(config)
    if hit is not None:
        return hit[0], 0.0
    where = plugin.spec.describe()
    train = setup.train.clone()
    start = time.perf_counter()
    with plugin_call(where, "compute_train_stats", passthrough=(ParameterError,)):
        stats = method.compute_train_stats(copy.deepcopy(setup.original), train, ctx)
    seconds = time.perf_counter() - start
    report_mutation(where, split_changes("train", train, setup.train))
    if not isinstance(stats, Mapping) or not all(isinstance(v, torch.Tensor) for v in stats.values()):
        raise PluginValidationError(f"{where}: compute_train_stats must return a dict of tensors, got "
                                    f"{type(stats).__name__}")
    setup.cache.put(config, stats, {"seconds": seconds})
    return {k: v.detach().cpu().clone() for k, v in stats.items()}, seconds


def run_method(setup: AuditSetup, plugin: LoadedPlugin, params: dict[str, Any], seed: int | None = None
               ) -> MethodRun:
    """Apply the method to a private copy of the original model, with private copies of the data it declared.

    A ``preset="auto"`` default is resolved for the task first, so the run records concrete values. Whatever the
    plugin raises (``sys.exit`` included) is a :class:`~muaudit.errors.PluginFailure` naming it; modifying its
    inputs in place is a :class:`~muaudit.errors.PluginValidationError` (both exit 3).
    """
    where = plugin.spec.describe()
    method = instantiate(plugin, params, setup.profile)
    seed = derive_seed(setup.task.seed, "method") if seed is None else seed
    ctx = method_context(setup, seed, plugin.spec.name)
    needs = plugin.cls.needs
    stats, stats_seconds = (_train_stats(setup, method, plugin, ctx) if "train_stats" in needs else (None, 0.0))
    given = _declared_data(setup, needs, stats)
    data = MethodData(plugin.spec.name, given["forget"], retain=given.get("retain"),
                      validation=given.get("validation"), train_stats=given.get("train_stats"))
    model = copy.deepcopy(setup.original).to(setup.device)
    torch.manual_seed(derive_seed(seed, "torch"))
    start = time.perf_counter()
    with plugin_call(where, "unlearn", passthrough=(ParameterError,)):  # a value the user gave does not fit
        result = method.unlearn(model, data, ctx)
    seconds = time.perf_counter() - start
    report_mutation(where, _declared_changes(setup, given, stats))
    _check_result(plugin, setup.original, result)
    return MethodRun(result.eval(), plugin, method.hparams.as_dict(), seed, seconds, stats_seconds,
                     _preset_info(method, params), diagnostics=_diagnostics(plugin, method))


def _declared_data(setup: AuditSetup, needs: frozenset[str], stats: Mapping[str, torch.Tensor] | None
                   ) -> dict[str, Any]:
    """Private copies of the forget set and of every declared item."""
    given: dict[str, Any] = {"forget": setup.forget.clone()}
    if "retain" in needs:
        given["retain"] = setup.retain.clone()
    if "validation" in needs:
        given["validation"] = setup.data.val.clone()
    if stats is not None:
        given["train_stats"] = clone_tensors(stats)
    return given


def _declared_changes(setup: AuditSetup, given: dict[str, Any], stats: Mapping[str, torch.Tensor] | None
                      ) -> list[str]:
    changed = split_changes("data.forget", given["forget"], setup.forget)
    if "retain" in given:
        changed += split_changes("data.retain", given["retain"], setup.retain)
    if "validation" in given:
        changed += split_changes("data.validation", given["validation"], setup.data.val)
    if stats is not None:
        changed += tensors_changes("data.train_stats", given["train_stats"], stats)
    return changed


def _preset_info(method: UnlearningMethod, given: dict[str, Any]) -> dict[str, Any] | None:
    """Which preset filled the defaults, why, and whether the user left it to ``auto``."""
    choice = method.preset_choice
    if choice is None:
        return None
    return {"name": choice.name, "reason": choice.reason, "auto": given.get("preset", "auto") == "auto",
            "overridden": sorted(k for k, v in given.items() if k != "preset" and v is not None)}


def _diagnostics(plugin: LoadedPlugin, method: UnlearningMethod) -> dict[str, Any]:
    """A validated copy of what the method reported (it may have assigned ``diagnostics`` directly)."""
    raw = getattr(method, "diagnostics", {})
    if not isinstance(raw, Mapping):
        raise PluginValidationError(f"{plugin.spec.describe()}: diagnostics must be a dict, got {type(raw).__name__}")
    try:
        return {k: diagnostic_value(plugin.spec.name, k, v) for k, v in raw.items()}
    except PluginValidationError as exc:
        raise PluginValidationError(f"{plugin.spec.describe()}: {exc}") from None


def _check_result(plugin: LoadedPlugin, original: nn.Module, result: Any) -> None:
    where = plugin.spec.describe()
    if not isinstance(result, nn.Module):
        raise PluginValidationError(f"{where} returned {type(result).__name__}, not a torch.nn.Module")
    try:
        load_into(copy.deepcopy(original), result.state_dict(), f"the model returned by {where}")
    except CheckpointError as exc:
        raise PluginValidationError(str(exc)) from None
    for name, tensor in result.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise PluginValidationError(f"{where} produced NaN or infinite values in {name!r}")


class ShadowUnlearner:
    """The method under audit, applied to shadow models (U-LiRA): same parameters, each shadow's own data.

    A shadow trained on pool examples ``train_idx`` forgets ``forget_idx`` (a subset): the method receives only
    what it declared, built from that shadow's own training set (retain = ``train_idx`` minus ``forget_idx``,
    training statistics computed on ``train_idx`` with the shadow model), the task's validation split, and a seed
    derived from the shadow's. ``label`` identifies the method and its settings in cache keys.
    """

    def __init__(self, setup: AuditSetup | MethodEnvironment, plugin: LoadedPlugin, params: dict[str, Any],
                 seed: int) -> None:
        self.env = setup if isinstance(setup, MethodEnvironment) else MethodEnvironment.of(setup)
        self.plugin, self.params, self.seed = plugin, dict(params), seed
        method = instantiate(plugin, params, self.env.profile)
        self.label = {"method": plugin.spec.qualified_name, "version": plugin.spec.version,
                      "params": method.hparams.as_dict(), "seed": seed}

    @property
    def portable(self) -> bool:
        """Whether the bank's executor may run this unlearner on its workers (it can import the method's class):
        it is then the ``make`` of :meth:`muaudit.shadows.ShadowBank.derived`, sent to each worker once."""
        from muaudit.engine import importable

        return importable(self.plugin.cls)

    def __call__(self, model: nn.Module, pool: Split, device: torch.device, train_idx: np.ndarray,
                 forget_idx: np.ndarray, shadow_seed: int) -> nn.Module:
        """:meth:`unlearn` on ``device`` (a worker's): the ``make(model, pool, device, *args)`` of a derive job.
        On a worker the method sees exactly what it sees here (the pool is the same training pool, rebuilt from
        the task and data)."""
        return self.on(device).unlearn(model, pool, train_idx, forget_idx, shadow_seed)

    def on(self, device: torch.device) -> "ShadowUnlearner":
        """This unlearner running on ``device`` (a worker's), all else the same."""
        if torch.device(device) == torch.device(self.env.device):
            return self
        env = replace(self.env, device=torch.device(device), factory=replace(self.env.factory, device=device))
        return ShadowUnlearner(env, self.plugin, self.params, self.seed)

    def unlearn(self, model: nn.Module, pool: Split, train_idx: np.ndarray, forget_idx: np.ndarray,
                shadow_seed: int) -> nn.Module:
        env, needs, where = self.env, self.plugin.cls.needs, self.plugin.spec.describe()
        method = instantiate(self.plugin, self.params, env.profile)
        seed = derive_seed(self.seed, "shadow", shadow_seed)
        ctx = method_context(env, seed, None)
        train_idx, forget_idx = np.array(train_idx, dtype=np.int64), np.array(forget_idx, dtype=np.int64)
        retain_idx = np.setdiff1d(train_idx, forget_idx)
        stats = None
        if "train_stats" in needs:
            with plugin_call(where, "compute_train_stats"):
                stats = method.compute_train_stats(copy.deepcopy(model), pool.subset(train_idx), ctx)
        data = MethodData(self.plugin.spec.name, pool.subset(forget_idx),
                          retain=pool.subset(retain_idx) if "retain" in needs else None,
                          validation=env.validation.clone() if "validation" in needs else None,
                          train_stats=stats)
        private = copy.deepcopy(model).to(env.device)
        torch.manual_seed(derive_seed(seed, "torch"))
        with plugin_call(where, "unlearn"):
            result = method.unlearn(private, data, ctx)
        _check_result(self.plugin, model, result)
        return result.eval()

