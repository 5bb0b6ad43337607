"""muaudit: audit machine unlearning against the gold model (the same recipe retrained without the forget set).

Start with :func:`muaudit.audit` (one method) or :func:`muaudit.compare` (several), see :mod:`muaudit.api`.

The core defines tasks, the model zoo, gold retraining, readouts, attack metrics and the scorecard; unlearning
methods and membership-inference attacks are plugins found through the entry-point groups ``muaudit.methods`` and
``muaudit.attacks``. Heavy modules are imported lazily so that ``import muaudit`` stays cheap.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "compare": "muaudit.api",
    "prepare_audit": "muaudit.api",
    "Comparison": "muaudit.comparison",
    "MethodFailure": "muaudit.comparison",
    "StateAdapter": "muaudit.adapt",
    "TaskError": "muaudit.errors",
    "PluginError": "muaudit.errors",
    "UnlearningMethod": "muaudit.base",
    "MembershipAttack": "muaudit.base",
    "MethodData": "muaudit.base",
    "MethodContext": "muaudit.base",
    "ModelOutputs": "muaudit.base",
    "AttackContext": "muaudit.base",
    "AttackScores": "muaudit.base",
    "Param": "muaudit.params",
    "Interval": "muaudit.params",
    "Choice": "muaudit.params",
    "Search": "muaudit.params",
    "Relative": "muaudit.presets",
    "TaskProfile": "muaudit.presets",
    "preset_param": "muaudit.presets",
    "Task": "muaudit.task",
    "Recipe": "muaudit.task",
    "Scorecard": "muaudit.results",
    "MuauditError": "muaudit.errors",
}

__all__ = ["__version__", "audit", "plot", "report", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in ("audit", "plot", "report"):  # submodules; muaudit.audit is callable (runs muaudit.api.audit)
        return import_module(f"muaudit.{name}")
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'muaudit' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names (tab completion), although they are imported lazily."""
    return sorted({*__all__, *(n for n in globals() if n.startswith("__"))})
