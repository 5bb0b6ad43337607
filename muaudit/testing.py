"""Conformance checks that any method plugin can run (the start of muaudit's plugin conformance kit).

Each check takes a prepared :class:`~muaudit.audit.AuditSetup` (e.g. from :func:`tiny_setup`) and a loaded plugin
and raises ``AssertionError`` with a clear message when the contract is broken:

- :func:`check_does_not_mutate_input`: the method leaves the data it is handed (its private copies) and the
  audit's data and models (the original's weights and buffers included) bit-identical.
- :func:`check_seed_determinism`: the same seed gives bit-identical weights (unless the method declares
  ``deterministic = False``).
- :func:`check_refuses_undeclared_data`: asking ``MethodData`` for undeclared data raises.

:func:`judge_defaults` applies the acceptance rule of task-matched defaults (does a run move the forget error
toward gold without collapse?), used by ``tests/test_defaults.py`` and ``reports/scripts/acceptance.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from muaudit.audit import AuditSetup, prepare, run_method
from muaudit.base import MethodData
from muaudit.cache import TensorCache
from muaudit.checkpoint import state_dict_sha256
from muaudit.errors import PluginValidationError, UndeclaredDataError
from muaudit.plugins import METHODS, LoadedPlugin, load_by_name
from muaudit.seal import AuditFingerprint, audit_tensors
from muaudit.task import NAMED_TASKS, Task


def tiny_setup(cache_dir: str | Path, task: Task | str = "digits", gold_count: int = 2) -> AuditSetup:
    """A CPU audit set-up on a named (digits-scale) task with a private cache directory."""
    resolved = NAMED_TASKS[task] if isinstance(task, str) else task
    return prepare(resolved, gold_count=gold_count, cache=TensorCache(cache_dir), device=torch.device("cpu"))


def load_method(name: str) -> LoadedPlugin:
    """Load a method through its entry point, exactly as the CLI does."""
    return load_by_name(METHODS, name)


def check_does_not_mutate_input(setup: AuditSetup, plugin: LoadedPlugin, params: dict[str, Any]) -> None:
    """Neither the model nor the data a method is handed may change: the method's own copies (detected by
    :func:`~muaudit.runs.run_method`) and the audit's data and models (fingerprinted before and after)."""
    where = plugin.spec.describe()
    before = AuditFingerprint.of(audit_tensors(setup))
    try:
        run_method(setup, plugin, params, seed=1)
    except PluginValidationError as exc:
        if "in place" in str(exc):
            raise AssertionError(str(exc)) from None
        raise
    changed = before.changed(audit_tensors(setup))
    assert not changed, f"{where} modified the audit's {', '.join(changed[:3])}"


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


@dataclass(frozen=True)
class DefaultsJudgement:
    """Did a method's run move the forget error toward gold without collapsing the test error?

    The rule (the project's defaults check): the forget error must move from the original's toward the gold
    models' mean by at least min(1 point, a quarter of their gap), and the test error must stay within
    max(2 points, 3 gold spreads) of the worse of the original and the reference gold model.
    """

    forget_error: float
    test_error: float
    original_forget_error: float
    gold_forget_error: float
    required_move: float
    test_ceiling: float

    @property
    def moved(self) -> bool:
        direction = 1.0 if self.gold_forget_error >= self.original_forget_error else -1.0
        return (self.forget_error - self.original_forget_error) * direction >= self.required_move

    @property
    def collapsed(self) -> bool:
        return self.test_error > self.test_ceiling

    def describe(self) -> str:
        return (f"forget error {self.original_forget_error:.2f} -> {self.forget_error:.2f} (gold "
                f"{self.gold_forget_error:.2f}, must move {self.required_move:.2f}); test error {self.test_error:.2f} "
                f"(ceiling {self.test_ceiling:.2f})")


def judge_defaults(setup: AuditSetup, model: torch.nn.Module) -> DefaultsJudgement:
    """Apply the defaults rule (:class:`DefaultsJudgement`) to ``model`` on ``setup``."""
    import numpy as np

    from muaudit import readouts as R

    def errors(m: torch.nn.Module) -> tuple[float, float]:
        out = setup.outputs(m)
        return (R.error_percent(out.forget_logits, out.forget_labels),
                R.error_percent(out.test_logits, out.test_labels))

    forget, test = errors(model)
    orig_forget, orig_test = errors(setup.original)
    golds = np.array([errors(g.model) for g in setup.golds])
    gap = float(golds[:, 0].mean()) - orig_forget
    ceiling = max(orig_test, float(golds[0, 1])) + max(2.0, 3 * float(golds[:, 1].max() - golds[:, 1].min()))
    return DefaultsJudgement(forget, test, orig_forget, float(golds[:, 0].mean()),
                             min(1.0, abs(gap) / 4) if gap else 1.0, ceiling)
