"""Conformance checks that any method plugin can run (the start of muaudit's plugin conformance kit).

Each check takes a prepared :class:`~muaudit.audit.AuditSetup` (e.g. from :func:`tiny_setup`) and a loaded plugin
and raises ``AssertionError`` with a clear message when the contract is broken:

- :func:`check_does_not_mutate_input`: the original model's weights and buffers are bit-identical afterwards.
- :func:`check_seed_determinism`: the same seed gives bit-identical weights (unless the method declares
  ``deterministic = False``).
- :func:`check_refuses_undeclared_data`: asking ``MethodData`` for undeclared data raises.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from muaudit.audit import AuditSetup, prepare, run_method
from muaudit.base import MethodData
from muaudit.cache import TensorCache
from muaudit.checkpoint import state_dict_sha256
from muaudit.errors import UndeclaredDataError
from muaudit.plugins import METHODS, LoadedPlugin, load_by_name
from muaudit.task import NAMED_TASKS, Task


def tiny_setup(cache_dir: str | Path, task: Task | str = "digits", gold_count: int = 2) -> AuditSetup:
    """A CPU audit set-up on a named (digits-scale) task with a private cache directory."""
    resolved = NAMED_TASKS[task] if isinstance(task, str) else task
    return prepare(resolved, gold_count=gold_count, cache=TensorCache(cache_dir), device=torch.device("cpu"))


def load_method(name: str) -> LoadedPlugin:
    """Load a method through its entry point, exactly as the CLI does."""
    return load_by_name(METHODS, name)


def check_does_not_mutate_input(setup: AuditSetup, plugin: LoadedPlugin, params: dict[str, Any]) -> None:
    before = state_dict_sha256(setup.original.state_dict())
    run_method(setup, plugin, params, seed=1)
    after = state_dict_sha256(setup.original.state_dict())
    assert before == after, f"{plugin.spec.describe()} modified the original model it was given"


def check_seed_determinism(setup: AuditSetup, plugin: LoadedPlugin, params: dict[str, Any]) -> None:
    if not plugin.cls.deterministic:
        return
    first = run_method(setup, plugin, params, seed=7).model.state_dict()
    second = run_method(setup, plugin, params, seed=7).model.state_dict()
    assert state_dict_sha256(first) == state_dict_sha256(second), (
        f"{plugin.spec.describe()} is not deterministic for a fixed seed")


def check_refuses_undeclared_data(setup: AuditSetup, plugin: LoadedPlugin) -> None:
    data = MethodData(plugin.spec.name, setup.forget,
                      retain=setup.retain if "retain" in plugin.cls.needs else None,
                      validation=setup.data.val if "validation" in plugin.cls.needs else None)
    for need in ("retain", "validation", "train_stats"):
        if need in plugin.cls.needs:
            continue
        try:
            getattr(data, need)
        except UndeclaredDataError:
            continue
        raise AssertionError(f"{plugin.spec.describe()} could reach undeclared data {need!r}")


def check_method(setup: AuditSetup, plugin: LoadedPlugin, params: dict[str, Any] | None = None) -> None:
    """Run every generic check on one method."""
    params = params or {}
    check_does_not_mutate_input(setup, plugin, params)
    check_seed_determinism(setup, plugin, params)
    check_refuses_undeclared_data(setup, plugin)
