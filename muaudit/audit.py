"""The audit pipeline, kept thin: task -> models -> method -> outputs -> readouts and attacks -> verdicts -> scorecard.

Calling this module, ``muaudit.audit(method, ...)``, runs the one-call API :func:`muaudit.api.audit`.

Each stage has its own module: :mod:`muaudit.models` (:func:`prepare`: data, original and gold models),
:mod:`muaudit.runs` (:func:`run_method`), :mod:`muaudit.attacking` (:func:`run_attack`), :mod:`muaudit.scoring`
(readouts, signal, verdicts, provenance). :func:`build_scorecard` strings them together; this module also
re-exports each stage's entry points, so ``from muaudit.audit import prepare, run_method`` keeps working.
"""
from __future__ import annotations

import sys
import types
from typing import Any, Sequence

from muaudit.attacking import AttackResults, AttackRun, attack_context, run_attack
from muaudit.errors import TaskError
from muaudit.models import (AuditSetup, TrainedModel, add_golds, checkpoint_metadata, gold_seeds,
                            original_from_checkpoint, prepare, shadow_bank, train_golds, train_original, versions)
from muaudit.plugins import LoadedPlugin
from muaudit.results import Scorecard
from muaudit.runs import MethodRun, ShadowUnlearner, method_context, run_method
from muaudit.scoring import assemble_scorecard, challenge_evaluation, signal_section, streisand_verdicts
from muaudit.timing import PhaseTimer

__all__ = ["AttackResults", "AttackRun", "AuditSetup", "MethodRun", "ShadowUnlearner", "TrainedModel",
           "add_golds", "attack_context", "build_scorecard", "challenge_evaluation", "checkpoint_metadata", "gold_seeds",
           "method_context", "original_from_checkpoint", "prepare", "run_attack", "run_method", "shadow_bank",
           "signal_section", "streisand_verdicts", "train_golds", "train_original", "versions"]


AttackSpec = LoadedPlugin | tuple[LoadedPlugin, dict[str, Any]]


def build_scorecard(setup: AuditSetup, run: MethodRun, attacks: AttackSpec | Sequence[AttackSpec],
                    challenge_models: int = 0) -> Scorecard:
    """Every readout of ``run`` beside the original and gold models, with the gold-vs-gold spread.

    ``attacks``: one or more attack plugins, each optionally with its parameters (``(plugin, params)``).
    ``challenge_models`` > 0 adds the NeurIPS 2023 challenge readouts (:func:`challenge_evaluation`).
    """
    specs = [attacks] if isinstance(attacks, (LoadedPlugin, tuple)) else list(attacks)
    if not specs:
        raise TaskError("at least one membership attack is needed for the scorecard")
    pairs = [(a, {}) if isinstance(a, LoadedPlugin) else a for a in specs]
    timer = PhaseTimer()
    with timer("inference"):  # one pass per model, before anything reads the outputs
        for model in (run.model, setup.original, *(g.model for g in setup.golds)):
            setup.outputs(model)
    results = []
    for plugin, params in pairs:
        with timer(f"attack:{plugin.spec.name}"):
            results.append(run_attack(setup, plugin, run, params))
    return assemble_scorecard(setup, run, results, challenge_models, timer)


class _CallableModule(types.ModuleType):
    """``muaudit.audit`` is both this module (``from muaudit.audit import prepare`` keeps working) and the
    one-call API :func:`muaudit.api.audit` (``muaudit.audit("finetune")``): the package attribute and the submodule
    share one name, so the module itself is made callable."""

    def __call__(self, *args: Any, **kwargs: Any) -> Scorecard:
        from muaudit.api import audit

        return audit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
