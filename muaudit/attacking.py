"""Outputs -> attacks: each attack applied to the unlearned, original and every gold model of an audit.

One attack instance per (attack, parameters) serves every method of a set-up, so what it fits once (shadow
classifiers, Gaussians) is reused by ``compare``. The original's and gold models' results are memoised in memory
and cached on disk (:func:`reference_run`), keyed by the attack's identity (distribution, version, the size and
modification time of its files), its parameters, its seed, the method when the attack needs it, and the scored
model's outputs identity: a second audit of the same task scores only its unlearned model.
Metrics and their intervals are computed centrally (:mod:`muaudit.metrics`), never by the plugin.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch import nn

from muaudit.arrays import Scores
from muaudit.base import AttackContext, AttackScores, MembershipAttack, ModelOutputs
from muaudit.errors import ParameterError, PluginValidationError
from muaudit.metrics import AttackMetrics, MetricIntervals, attack_metrics, confidence_intervals, roc_summary
from muaudit.models import AuditSetup, shadow_bank
from muaudit.plugins import LoadedPlugin, plugin_fingerprint
from muaudit.runs import MethodRun, ShadowUnlearner
from muaudit.seal import AuditFingerprint, audit_tensors, clone_outputs, outputs_changes, plugin_call, report_mutation
from muaudit.serial import json_safe
from muaudit.training import derive_seed


@dataclass(frozen=True)
class AttackRun:
    """One attack applied to one model: its scores' metrics, intervals, ROC summary and settings, and the scores
    themselves (kept out of the scorecard JSON; :mod:`muaudit.arrays`)."""

    metrics: AttackMetrics
    intervals: MetricIntervals
    roc: dict[str, list]
    settings: dict[str, Any]
    most_exposed: tuple[dict[str, float], ...] = ()
    scores: Scores | None = field(default=None, compare=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {**asdict(self.metrics), "intervals": asdict(self.intervals), "most_exposed": list(self.most_exposed)}


@dataclass(frozen=True)
class AttackResults:
    """An attack on the unlearned, original and every gold model of one audit."""

    plugin: LoadedPlugin
    params: dict[str, Any]
    unlearned: AttackRun
    original: AttackRun
    golds: tuple[AttackRun, ...]

    @property
    def name(self) -> str:
        return self.plugin.spec.name


def attack_context(setup: AuditSetup, plugin: LoadedPlugin, seed: int, role: str,
                   unlearner: ShadowUnlearner | None) -> AttackContext:
    """The attack's context: the shadow bank and its (private) copy of the data set only for an attack that declared
    ``shadows``."""
    needs = frozenset(getattr(plugin.cls, "needs", frozenset()))
    bank = shadow_bank(setup) if "shadows" in needs else None
    return AttackContext(plugin.spec.name, seed, role, needs=needs,
                         forget_indices=np.asarray(setup.task.forget_indices or (), dtype=np.int64),
                         n_classes=setup.data.n_classes, task=setup.task, data=None if bank is None else bank.data,
                         bank=bank,
                         unlearner=unlearner if "method" in needs else None)


def _attack_run(attack: MembershipAttack, outputs: ModelOutputs, ctx: AttackContext, where: str) -> AttackRun:
    """Score a private copy of ``outputs``; an attack that modified its copy violated the contract."""
    given = clone_outputs(outputs)
    with plugin_call(where, "score"):
        scores = attack.score(given, ctx)
    report_mutation(where, outputs_changes("outputs", given, outputs))
    if not isinstance(scores, AttackScores):
        raise PluginValidationError(f"{where} returned {type(scores).__name__} from score, not AttackScores")
    members = np.asarray(scores.members, dtype=np.float64)
    nonmembers = np.asarray(scores.nonmembers, dtype=np.float64)
    for label, values in (("member", members), ("non-member", nonmembers)):
        if values.ndim != 1 or len(values) == 0 or not np.isfinite(values).all():
            raise PluginValidationError(f"{where} returned invalid {label} scores (need a non-empty "
                                        f"1-D array of finite numbers)")
    metrics = attack_metrics(members, nonmembers, scores.threshold)
    intervals = confidence_intervals(members, nonmembers, metrics.threshold, derive_seed(ctx.seed, "ci", ctx.role))
    positions = scores.settings.get("member_positions")
    return AttackRun(metrics, intervals, roc_summary(members, nonmembers), dict(scores.settings),
                     _most_exposed(members, positions), Scores.of(members, nonmembers, positions))


#: 2: the scores are cached too, in a companion ``.npz`` whose digest the JSON records.
ATTACK_RUN_SCHEMA = 2


def reference_run(setup: AuditSetup, model: nn.Module, role: str, identity: dict[str, Any],
                  compute: Callable[[nn.Module, str], AttackRun]) -> AttackRun:
    """The attack run of an original or gold model: from the cache when present and valid, else computed and
    stored (best effort: an unwritable cache only costs time). The run is stored as JSON, its scores in a
    companion ``.npz`` written first; the JSON records the scores' digest, so a missing, stale or damaged
    companion makes the entry a miss."""
    config = {"role": "attack-run", "schema": ATTACK_RUN_SCHEMA, "model_role": role,
              "outputs": setup.outputs_identity(model), **identity}
    path = Path(setup.cache.root) / "attack-runs" / f"{setup.cache.key(config)}.json"
    expected = json.loads(json.dumps(config, default=str))
    cached = _read_cached_run(path, expected)
    if cached is not None:
        return cached
    run = compute(model, role)
    payload = json_safe(asdict(replace(run, scores=None)))
    payload.pop("scores")
    if run.scores is not None and _write_scores(path.with_suffix(".npz"), run.scores):
        _write_json(path, {"config": expected, "run": payload, "sha256": _digest(payload),
                           "scores_sha256": run.scores.digest()})
    return run


def _read_cached_run(path: Path, expected: dict[str, Any]) -> AttackRun | None:
    """The cached run at ``path`` with its scores, or ``None`` when absent, stale or damaged."""
    try:
        stored = json.loads(path.read_text())
        if stored.get("config") != expected or stored.get("sha256") != _digest(stored["run"]):
            return None
        with np.load(path.with_suffix(".npz"), allow_pickle=False) as raw:
            scores = Scores(raw["members"], raw["nonmembers"], raw["member_positions"])
        if scores.digest() != stored.get("scores_sha256"):
            return None
        return replace(_run_from_dict(stored["run"]), scores=scores)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        return None


def _write_scores(path: Path, scores: Scores) -> bool:
    """Store ``scores`` as ``path`` (.npz, atomically); False when the cache is not writable."""
    import os
    import tempfile

    from muaudit.arrays import npz_bytes
    from muaudit.files import publish

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(npz_bytes(scores.as_arrays()))
        publish(tmp, path)
        return True
    except OSError:
        return False


def _digest(payload: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _run_from_dict(raw: dict[str, Any]) -> AttackRun:
    metrics = AttackMetrics(**{**raw["metrics"], "notes": tuple(raw["metrics"]["notes"])})
    intervals = MetricIntervals(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in raw["intervals"].items()})
    return AttackRun(metrics, intervals, raw["roc"], raw["settings"], tuple(raw["most_exposed"]))


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    from muaudit.files import write_json_best_effort

    write_json_best_effort(path, payload)


def _most_exposed(members: np.ndarray, positions: Any, count: int = 10) -> tuple[dict[str, float], ...]:
    """The forget examples with the highest member scores (attacks reference, reporting convention 7).

    ``position`` is the example's position in D_f (as ordered by the task's forget indices); attacks that score a
    subset of D_f say which positions with ``settings["member_positions"]``.
    """
    where = np.arange(len(members)) if positions is None else np.asarray(positions)
    order = np.argsort(-members, kind="stable")[:count]
    return tuple({"forget_position": int(where[i]), "score": float(members[i])} for i in order)


def run_attack(setup: AuditSetup, plugin: LoadedPlugin, run: MethodRun | None, params: dict[str, Any] | None = None
               ) -> AttackResults:
    """Apply one attack to the unlearned, original and gold models (the last two memoised per attack).

    One attack instance per (attack, parameters) serves every method of the set-up, so what it fits once (shadow
    classifiers, Gaussians) is reused by ``compare``; the scores of the original and gold models are memoised too.
    ``run=None`` scores the original in the unlearned model's place (the task's signal, before any method); an
    attack that needs the method under audit (U-LiRA) cannot do that.
    """
    params = dict(params or {})
    where = plugin.spec.describe()
    with plugin_call(where, "__init__", passthrough=(ParameterError,)):
        probe: MembershipAttack = plugin.cls(**params)
    instance_key = (plugin.spec.qualified_name, json.dumps(probe.hparams.as_dict(), sort_keys=True, default=str))
    attack = setup._attack_instances.setdefault(instance_key, probe)
    seed = derive_seed(setup.task.seed, "attack")
    needs = frozenset(getattr(plugin.cls, "needs", frozenset()))
    if run is None and "method" in needs:
        raise PluginValidationError(f"attack {plugin.spec.name!r} needs the method under audit: it cannot score a "
                                    f"task without one")
    unlearner = ShadowUnlearner(setup, run.plugin, run.params, run.seed) if run and "method" in needs else None
    key = (plugin.spec.qualified_name, json.dumps(attack.hparams.as_dict(), sort_keys=True, default=str),
           json.dumps(unlearner.label, sort_keys=True, default=str) if unlearner else "")
    before = AuditFingerprint.of(_reachable_tensors(setup, needs)) if needs else None

    def on(model: nn.Module, role: str) -> AttackRun:
        return _attack_run(attack, setup.outputs(model), attack_context(setup, plugin, seed, role, unlearner), where)

    if key not in setup._attack_memo:
        identity = {"attack": list(key), "plugin": plugin_fingerprint(plugin.spec), "seed": seed}
        setup._attack_memo[key] = (reference_run(setup, setup.original, "original", identity, on),
                                   tuple(reference_run(setup, g.model, "gold", identity, on) for g in setup.golds))
    original, golds = setup._attack_memo[key]
    unlearned = original if run is None else on(run.model, "unlearned")
    if before is not None:
        _check_untouched(setup, before, needs, where)
    return AttackResults(plugin, attack.hparams.as_dict(), unlearned, original, golds)


def _reachable_tensors(setup: AuditSetup, needs: frozenset[str]) -> list[tuple[str, Any]]:
    """The audit's own tensors plus, for an attack holding the shadow bank, the bank's data and pool."""
    named = audit_tensors(setup)
    if "shadows" in needs or "method" in needs:
        bank = shadow_bank(setup)
        for split in ("train", "val", "test"):
            part = getattr(bank.data, split)
            named += [(f"shadow bank data.{split}.x", part.x), (f"shadow bank data.{split}.y", part.y)]
        named += [("shadow bank pool.x", bank.pool.x), ("shadow bank pool.y", bank.pool.y)]
    return named


def _check_untouched(setup: AuditSetup, before: AuditFingerprint, needs: frozenset[str], where: str) -> None:
    """Raise if the attack changed anything it could reach; a tampered shadow bank is dropped (the next attack
    gets a fresh one, built from the audit's data) so that nothing later uses it."""
    changed = before.changed(_reachable_tensors(setup, needs))
    if changed:
        setup._bank = None
        setup._attack_memo.clear()
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise PluginValidationError(f"{where} changed {shown} (reached through its declared services); plugins "
                                    f"must not modify what they are given")
