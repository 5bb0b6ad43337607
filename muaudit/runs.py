"""Method runs: a method applied to a private copy of the original model, with only the data it declared.

:func:`run_method` resolves the method's ``preset="auto"`` for the task, computes (and caches) the training-set
statistics it declared, hands it a :class:`~muaudit.base.MethodData` with nothing undeclared, times it and checks
what it returned. :class:`ShadowUnlearner` applies the same method to shadow models (U-LiRA).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from muaudit.base import MethodContext, MethodData, UnlearningMethod
from muaudit.checkpoint import load_into
from muaudit.data import Split
from muaudit.errors import CheckpointError, PluginValidationError
from muaudit.models import AuditSetup
from muaudit.plugins import LoadedPlugin
from muaudit.training import derive_seed, fresh_model


# ------------------------------------------------------------------------------------ method runs
@dataclass(frozen=True)
class MethodRun:
    """An unlearned model with the method's identity, parameters, seed and timing."""

    model: nn.Module
    plugin: LoadedPlugin
    params: dict[str, Any]
    seed: int
    seconds: float
    stats_seconds: float
    preset: dict[str, Any] | None = None
    tuning: dict[str, Any] | None = None  # set when the parameters came from muaudit.tune (its summary)


def method_context(setup: AuditSetup, seed: int, label: str | None) -> MethodContext:
    task, data = setup.task, setup.data
    return MethodContext(device=setup.device, seed=seed, recipe=task.recipe, n_classes=data.n_classes,
                         input_shape=data.input_shape,
                         fresh_model=lambda s: fresh_model(task, data, s).to(setup.device),
                         progress=label if setup.progress else None, task=setup.profile)


def _train_stats(setup: AuditSetup, method: UnlearningMethod, plugin: LoadedPlugin,
                 ctx: MethodContext) -> tuple[dict[str, torch.Tensor], float]:
    config = {"role": "train_stats", "method": plugin.spec.qualified_name, "version": plugin.spec.version,
              "original": setup.original_source["state_sha256"], "task_hash": setup.task.content_hash(),
              "params": method.train_stats_params()}
    hit = setup.cache.get(config)
    if hit is not None:
        return hit[0], 0.0
    start = time.perf_counter()
    stats = method.compute_train_stats(copy.deepcopy(setup.original), setup.train, ctx)
    seconds = time.perf_counter() - start
    setup.cache.put(config, stats, {"seconds": seconds})
    return stats, seconds


def run_method(setup: AuditSetup, plugin: LoadedPlugin, params: dict[str, Any], seed: int | None = None
               ) -> MethodRun:
    """Apply the method to a private copy of the original model, with only the data it declared.

    A ``preset="auto"`` default is resolved for the task first, so the run records concrete values.
    """
    method: UnlearningMethod = plugin.cls(**params).for_task(setup.profile)
    seed = derive_seed(setup.task.seed, "method") if seed is None else seed
    ctx = method_context(setup, seed, plugin.spec.name)
    needs = plugin.cls.needs
    stats, stats_seconds = (_train_stats(setup, method, plugin, ctx) if "train_stats" in needs else (None, 0.0))
    data = MethodData(plugin.spec.name, setup.forget,
                      retain=setup.retain if "retain" in needs else None,
                      validation=setup.data.val if "validation" in needs else None,
                      train_stats=stats)
    model = copy.deepcopy(setup.original).to(setup.device)
    torch.manual_seed(derive_seed(seed, "torch"))
    start = time.perf_counter()
    result = method.unlearn(model, data, ctx)
    seconds = time.perf_counter() - start
    _check_result(plugin, setup.original, result)
    return MethodRun(result.eval(), plugin, method.hparams.as_dict(), seed, seconds, stats_seconds,
                     _preset_info(method, params))


def _preset_info(method: UnlearningMethod, given: dict[str, Any]) -> dict[str, Any] | None:
    """Which preset filled the defaults, why, and whether the user left it to ``auto``."""
    choice = method.preset_choice
    if choice is None:
        return None
    return {"name": choice.name, "reason": choice.reason, "auto": given.get("preset", "auto") == "auto",
            "overridden": sorted(k for k, v in given.items() if k != "preset" and v is not None)}


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

    def __init__(self, setup: AuditSetup, plugin: LoadedPlugin, params: dict[str, Any], seed: int) -> None:
        self.setup, self.plugin, self.params, self.seed = setup, plugin, dict(params), seed
        method = plugin.cls(**params).for_task(setup.profile)
        self.label = {"method": plugin.spec.qualified_name, "version": plugin.spec.version,
                      "params": method.hparams.as_dict(), "seed": seed}

    def unlearn(self, model: nn.Module, pool: Split, train_idx: np.ndarray, forget_idx: np.ndarray,
                shadow_seed: int) -> nn.Module:
        setup, needs = self.setup, self.plugin.cls.needs
        method: UnlearningMethod = self.plugin.cls(**self.params).for_task(setup.profile)
        seed = derive_seed(self.seed, "shadow", shadow_seed)
        ctx = method_context(setup, seed, None)
        train_idx, forget_idx = np.array(train_idx, dtype=np.int64), np.array(forget_idx, dtype=np.int64)
        retain_idx = np.setdiff1d(train_idx, forget_idx)
        stats = (method.compute_train_stats(copy.deepcopy(model), pool.subset(train_idx), ctx)
                 if "train_stats" in needs else None)
        data = MethodData(self.plugin.spec.name, pool.subset(forget_idx),
                          retain=pool.subset(retain_idx) if "retain" in needs else None,
                          validation=setup.data.val if "validation" in needs else None, train_stats=stats)
        model = copy.deepcopy(model).to(setup.device)
        torch.manual_seed(derive_seed(seed, "torch"))
        result = method.unlearn(model, data, ctx)
        _check_result(self.plugin, model, result)
        return result.eval()
