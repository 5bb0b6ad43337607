"""The audit pipeline: original model, gold retrains, method run, readouts, scorecard.

:func:`prepare` builds an :class:`AuditSetup` (task, data, original model, gold models) that several methods can
share (``muaudit compare``); :func:`run_method` applies one method to a private copy of the original and times it;
:func:`build_scorecard` computes every readout from each model's logits, which are computed once per split.
"""
from __future__ import annotations

import copy
import json
import platform
import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from muaudit import readouts as R
from muaudit import verdicts as V
from muaudit.base import AttackContext, MembershipAttack, MethodContext, MethodData, ModelOutputs, UnlearningMethod
from muaudit.cache import TensorCache
from muaudit.checkpoint import Checkpoint, load_checkpoint, load_into, state_dict_sha256
from muaudit.data import DataBundle, Split
from muaudit.errors import CheckpointError, PluginValidationError, TaskError
from muaudit.metrics import AttackMetrics, MetricIntervals, attack_metrics, confidence_intervals, roc_summary
from muaudit.plugins import LoadedPlugin
from muaudit.presets import TaskProfile, profile_of
from muaudit.results import AttackReport, Readout, Scorecard
from muaudit.shadows import ModelRequest, ShadowBank
from muaudit.task import ModelSpec, Task, spec_key
from muaudit.training import derive_seed, fresh_model, predict_logits
from muaudit.zoo import last_linear_prefix


@dataclass(frozen=True)
class TrainedModel:
    """A model trained by muaudit with its seed and how long its training took."""

    model: nn.Module
    seed: int
    train_seconds: float
    from_cache: bool


@dataclass
class AuditSetup:
    """Everything shared by the methods audited on one task: data, original and gold models, cached logits."""

    task: Task
    data: DataBundle
    original: nn.Module
    original_source: dict[str, Any]
    golds: list[TrainedModel]
    device: torch.device
    cache: TensorCache
    progress: bool = False
    _outputs: dict[int, ModelOutputs] = field(default_factory=dict, repr=False)
    _attack_memo: dict[tuple[str, ...], Any] = field(default_factory=dict, repr=False)
    _attack_instances: dict[tuple[str, str], MembershipAttack] = field(default_factory=dict, repr=False)
    _bank: Any = field(default=None, repr=False)

    @cached_property
    def train(self) -> Split:
        """D as the original model saw it (flipped labels on a label-flip poisoning task)."""
        return self.task.training_split(self.data)

    @cached_property
    def profile(self) -> TaskProfile:
        """The task's scale, from which methods' ``preset="auto"`` defaults are resolved."""
        return profile_of(self.task, self.data)

    @cached_property
    def forget(self) -> Split:
        return self.train.subset(list(self.task.forget_indices or ()))

    @cached_property
    def retain(self) -> Split:
        mask = np.ones(len(self.train), dtype=bool)
        mask[list(self.task.forget_indices or ())] = False
        return self.train.subset(np.flatnonzero(mask))

    def outputs(self, model: nn.Module) -> ModelOutputs:
        """Logits of ``model`` on D_f, D_r and the test split (memoised for the original and gold models)."""
        key = id(model)
        if key not in self._outputs:
            forget, retain, test = self.forget, self.retain, self.data.test
            result = ModelOutputs(
                predict_logits(model, forget, self.device), forget.y,
                predict_logits(model, retain, self.device), retain.y,
                predict_logits(model, test, self.device), test.y,
            )
            if model is not self.original and all(model is not g.model for g in self.golds):
                return result
            self._outputs[key] = result
        return self._outputs[key]


# ---------------------------------------------------------------------------------- model sources
def versions() -> dict[str, str]:
    """Versions of Python and the numerical stack, for provenance."""
    import scipy
    import sklearn

    from muaudit import __version__

    return {"muaudit": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "scipy": scipy.__version__, "scikit-learn": sklearn.__version__}


def checkpoint_metadata(task: Task, role: str, seed: int, train_seconds: float) -> dict[str, Any]:
    return {"role": role, "task": task.to_dict(), "task_hash": task.content_hash(), "arch": task.model.arch,
            "seed": seed, "train_seconds": train_seconds, "versions": versions()}


def _train_cached(bank: ShadowBank, indices: np.ndarray, role: str, seed: int) -> TrainedModel:
    """One model through the shadow bank, trained one by one (bit-identical to ``train_from_scratch``, timed)."""
    request = ModelRequest(role, indices, seed)
    trained_before = bank.n_trained
    model = bank.models([request], trainer="sequential")[0]
    meta = bank.metadata(request, trainer="sequential") or {}
    return TrainedModel(model, seed, float(meta.get("train_seconds", float("nan"))), bank.n_trained == trained_before)


def train_original(bank: ShadowBank) -> TrainedModel:
    """The original model: the task's recipe on the whole training set D (cached in the bank)."""
    return _train_cached(bank, np.arange(bank.n_train), "original", derive_seed(bank.task.seed, "original"))


def gold_seeds(task: Task, count: int) -> list[int]:
    return [derive_seed(task.seed, "gold", j) for j in range(count)]


def train_golds(bank: ShadowBank, count: int) -> list[TrainedModel]:
    """``count`` gold models: fresh initialisation of every layer, the same recipe, on D_r only (cached)."""
    if count < 1:
        raise TaskError("at least one gold model is needed (--gold-seeds >= 1)")
    forget = np.asarray(bank.task.forget_indices or (), dtype=np.int64)
    retain = np.setdiff1d(np.arange(bank.n_train), forget)
    return [_train_cached(bank, retain, "gold", s) for s in gold_seeds(bank.task, count)]


def original_from_checkpoint(ckpt: Checkpoint, task: Task | None, arch: str | None,
                             data_root: str | None) -> tuple[Task, dict[str, Any]]:
    """Resolve the task of a checkpoint: its own metadata, or ``task``/``arch`` for a bare state dict."""
    if ckpt.metadata is not None and "task" in ckpt.metadata:
        own = Task.from_dict(ckpt.metadata["task"])
        if data_root is not None:
            own = replace(own, dataset=replace(own.dataset, root=data_root))
        if task is not None and spec_key(task) != spec_key(own):
            raise TaskError(f"{ckpt.path} was trained on task {own.name!r}, which differs from the --task given")
        if arch is not None and arch != own.model.arch:
            raise CheckpointError(f"{ckpt.path} holds a {own.model.arch!r} model, not {arch!r}")
        return own, {"kind": "checkpoint", "path": ckpt.path, "sha256": ckpt.sha256, "bare": False}
    if task is None:
        raise CheckpointError(f"{ckpt.path} is a bare state dict without muaudit metadata: pass --task (and --arch)")
    if arch is not None:
        task = replace(task, model=ModelSpec(arch, task.model.options))
    return task, {"kind": "checkpoint", "path": ckpt.path, "sha256": ckpt.sha256, "bare": True}


def prepare(task: Task | None, checkpoint: str | None = None, arch: str | None = None,
            data_root: str | None = None, gold_count: int = 2, cache: TensorCache | None = None,
            device: torch.device | None = None, progress: bool = False) -> AuditSetup:
    """Load data, the original model and the gold models.

    The original comes from ``checkpoint`` (whose metadata names its task; a bare state dict needs ``task``) or,
    without one, is trained (and cached) from ``task``, which defaults to the named ``digits`` task.
    ``gold_count=0`` prepares everything but the gold models (``muaudit tune`` must never see them).
    """
    from muaudit.task import NAMED_TASKS

    cache = cache or TensorCache()
    device = device or torch.device("cpu")
    ckpt = load_checkpoint(checkpoint) if checkpoint else None
    source: dict[str, Any] = {"kind": "trained"}
    if ckpt is not None:
        task, source = original_from_checkpoint(ckpt, task, arch, data_root)
    task = task or NAMED_TASKS["digits"]
    if data_root is not None:
        task = replace(task, dataset=replace(task.dataset, root=data_root))
    data = task.dataset.load()
    task = task.materialise(data)
    bank = ShadowBank(task, data, cache, device, progress=progress)
    if ckpt is not None:
        original = load_into(fresh_model(task, data, 0), ckpt.state_dict, ckpt.path).to(device).eval()
    else:
        trained = train_original(bank)
        original = trained.model
        source["train_seconds"] = trained.train_seconds
    source["state_sha256"] = state_dict_sha256(original.state_dict())
    setup = AuditSetup(task, data, original, source, [], device, cache, progress, _bank=bank)
    setup.golds = train_golds(bank, gold_count) if gold_count else []
    return setup


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


# --------------------------------------------------------------------------------------- readouts
_PCT = "%"


def _model_readout(name: str, unit: str, hib: bool | None, desc: str, values: list[float | None],
                   unlearned: float | None, original: float | None) -> Readout:
    """``values`` are the gold models' values; the first is the reference gold."""
    gold = values[0]
    gap = None if unlearned is None or gold is None else unlearned - gold
    spread = tuple(abs(v - gold) for v in values[1:] if v is not None and gold is not None)
    return Readout(name, "model", unit, hib, desc, unlearned, original, gold, gap, spread)


def _distance_readout(name: str, unit: str, desc: str, unlearned: float, original: float,
                      spread: list[float]) -> Readout:
    return Readout(name, "distance", unit, False, desc, unlearned, original, None, None, tuple(spread))


def _accuracy_readouts(u: ModelOutputs, o: ModelOutputs, golds: list[ModelOutputs]) -> list[Readout]:
    out = []
    for split, label in (("test", "the test split"), ("forget", "D_f"), ("retain", "D_r")):
        def err(m: ModelOutputs, s: str = split) -> float:
            return R.error_percent(getattr(m, f"{s}_logits"), getattr(m, f"{s}_labels"))

        out.append(_model_readout(f"{split}_error", _PCT, None if split == "forget" else False,
                                  f"100 - accuracy on {label} (PGU paper Tables 1-3)",
                                  [err(g) for g in golds], err(u), err(o)))
    return out


def _clean_label_readout(setup: AuditSetup, u: ModelOutputs, o: ModelOutputs,
                         golds: list[ModelOutputs]) -> list[Readout]:
    """On a label-flip poisoning task: error on D_f against the true (clean) labels, i.e. de-poisoning."""
    if setup.task.poison_labels is None:
        return []
    clean = setup.data.train.y[list(setup.task.forget_indices or ())]

    def err(m: ModelOutputs) -> float:
        return R.error_percent(m.forget_logits, clean)

    return [_model_readout("forget_clean_error", _PCT, False,
                           "100 - accuracy on D_f against its true labels (poisoning tasks: D_f's labels are flipped)",
                           [err(g) for g in golds], err(u), err(o))]


def _output_distance_readouts(u: ModelOutputs, o: ModelOutputs, golds: list[ModelOutputs]) -> list[Readout]:
    ref, others = golds[0].forget_logits, [g.forget_logits for g in golds[1:]]
    specs = [
        ("activation_distance", "L2", R.activation_distance,
         "mean over D_f of ||softmax(model) - softmax(gold)||_2 (SSD/TMU actv_dist)"),
        ("js_to_gold", "nats", R.js_divergence, "mean over D_f of the Jensen-Shannon divergence to gold"),
        ("kl_gold_to_model", "nats", lambda m, g: R.kl_divergence(g, m),
         "mean over D_f of KL(p_gold || p_model)"),
    ]
    return [_distance_readout(name, unit, desc, fn(u.forget_logits, ref), fn(o.forget_logits, ref),
                              [fn(x, ref) for x in others]) for name, unit, fn, desc in specs]


def _entropy_readouts(u: ModelOutputs, o: ModelOutputs, golds: list[ModelOutputs]) -> list[Readout]:
    h = {"u": R.entropies(u.forget_logits), "o": R.entropies(o.forget_logits)}
    hg = [R.entropies(g.forget_logits) for g in golds]
    dists = {k: R.distribution_distance(v, hg[0]) for k, v in h.items()}
    spread = [R.distribution_distance(x, hg[0]) for x in hg[1:]]
    return [
        _model_readout("forget_entropy_mean", "nats", None, "mean softmax entropy on D_f (PGU Figs. 1, 3, 5)",
                       [float(x.mean()) for x in hg], float(h["u"].mean()), float(h["o"].mean())),
        _distance_readout("entropy_wasserstein", "nats",
                          "1-Wasserstein distance between the D_f entropy distributions of model and gold",
                          dists["u"].wasserstein, dists["o"].wasserstein, [d.wasserstein for d in spread]),
        _distance_readout("entropy_ks", "statistic",
                          "two-sample Kolmogorov-Smirnov statistic between D_f entropy distributions of model "
                          "and gold", dists["u"].ks_statistic, dists["o"].ks_statistic,
                          [d.ks_statistic for d in spread]),
    ]


def _parameter_readouts(unlearned: nn.Module, original: nn.Module, golds: list[nn.Module]) -> list[Readout]:
    last = last_linear_prefix(original)
    to_orig = {"u": R.parameter_change(unlearned, original, last),
               "g": [R.parameter_change(g, original, last) for g in golds]}
    to_gold = {"u": R.parameter_change(unlearned, golds[0], last), "o": R.parameter_change(original, golds[0], last),
               "g": [R.parameter_change(g, golds[0], last) for g in golds[1:]]}
    out = []
    for field_name, label in (("l1_all", "L1, all parameters"), ("l2_all", "L2, all parameters"),
                              ("l1_last", "L1, last linear layer"), ("l2_last", "L2, last linear layer")):
        def pick(pc: R.ParameterChange, f: str = field_name) -> float:
            return getattr(pc, f)

        out.append(_model_readout(f"param_{field_name}_to_original", "norm", None,
                                  f"{label} of theta - theta_original (delta-Targeted Figs. 1-3)",
                                  [pick(g) for g in to_orig["g"]], pick(to_orig["u"]), 0.0))
        out.append(_distance_readout(f"param_{field_name}_to_gold", "norm", f"{label} of theta - theta_gold",
                                     pick(to_gold["u"]), pick(to_gold["o"]), [pick(g) for g in to_gold["g"]]))
    return out


def _metrics_dict(m: AttackMetrics) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(m)


_ATTACK_FIELDS = (
    ("auc", "AUC of D_f (members) vs non-member scores; gold ~ 0.5 on a random subset", None),
    ("member_rate", "fraction of D_f the attack calls member at its threshold", None),
    ("balanced_accuracy", "balanced accuracy of D_f vs non-members at the attack's threshold", None),
    ("tpr_at_1pct_fpr", "TPR at 1% FPR (None: insufficient negatives)", None),
    ("tpr_at_01pct_fpr", "TPR at 0.1% FPR (None: insufficient negatives)", None),
)


@dataclass(frozen=True)
class AttackRun:
    """One attack applied to one model: its scores' metrics, intervals, ROC summary and settings."""

    metrics: AttackMetrics
    intervals: MetricIntervals
    roc: dict[str, list]
    settings: dict[str, Any]
    most_exposed: tuple[dict[str, float], ...] = ()

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


def shadow_bank(setup: AuditSetup) -> ShadowBank:
    """The audit's :class:`~muaudit.shadows.ShadowBank`: it trained the original and gold models and serves
    every extra model (shadows, challenge golds, unlearned shadows)."""
    if setup._bank is None:
        setup._bank = ShadowBank(setup.task, setup.data, setup.cache, setup.device, progress=setup.progress)
    return setup._bank


def attack_context(setup: AuditSetup, plugin: LoadedPlugin, seed: int, role: str,
                   unlearner: ShadowUnlearner | None) -> AttackContext:
    needs = frozenset(getattr(plugin.cls, "needs", frozenset()))
    return AttackContext(plugin.spec.name, seed, role, needs=needs,
                         forget_indices=np.asarray(setup.task.forget_indices or (), dtype=np.int64),
                         n_classes=setup.data.n_classes, task=setup.task, data=setup.data,
                         bank=shadow_bank(setup) if "shadows" in needs else None,
                         unlearner=unlearner if "method" in needs else None)


def _attack_run(attack: MembershipAttack, outputs: ModelOutputs, ctx: AttackContext) -> AttackRun:
    scores = attack.score(outputs, ctx)
    members = np.asarray(scores.members, dtype=np.float64)
    nonmembers = np.asarray(scores.nonmembers, dtype=np.float64)
    for label, values in (("member", members), ("non-member", nonmembers)):
        if values.ndim != 1 or len(values) == 0 or not np.isfinite(values).all():
            raise PluginValidationError(f"attack {ctx.attack!r} returned invalid {label} scores (need a non-empty "
                                        f"1-D array of finite numbers)")
    metrics = attack_metrics(members, nonmembers, scores.threshold)
    intervals = confidence_intervals(members, nonmembers, metrics.threshold, derive_seed(ctx.seed, "ci", ctx.role))
    return AttackRun(metrics, intervals, roc_summary(members, nonmembers), dict(scores.settings),
                     _most_exposed(members, scores.settings.get("member_positions")))


def _most_exposed(members: np.ndarray, positions: Any, count: int = 10) -> tuple[dict[str, float], ...]:
    """The forget examples with the highest member scores (attacks reference, reporting convention 7).

    ``position`` is the example's position in D_f (as ordered by the task's forget indices); attacks that score a
    subset of D_f say which positions with ``settings["member_positions"]``.
    """
    where = np.arange(len(members)) if positions is None else np.asarray(positions)
    order = np.argsort(-members, kind="stable")[:count]
    return tuple({"forget_position": int(where[i]), "score": float(members[i])} for i in order)


def run_attack(setup: AuditSetup, plugin: LoadedPlugin, run: MethodRun, params: dict[str, Any] | None = None
               ) -> AttackResults:
    """Apply one attack to the unlearned, original and gold models (the last two memoised per attack).

    One attack instance per (attack, parameters) serves every method of the set-up, so what it fits once (shadow
    classifiers, Gaussians) is reused by ``compare``; the scores of the original and gold models are memoised too.
    """
    params = dict(params or {})
    probe: MembershipAttack = plugin.cls(**params)
    instance_key = (plugin.spec.qualified_name, json.dumps(probe.hparams.as_dict(), sort_keys=True, default=str))
    attack = setup._attack_instances.setdefault(instance_key, probe)
    seed = derive_seed(setup.task.seed, "attack")
    needs = frozenset(getattr(plugin.cls, "needs", frozenset()))
    unlearner = ShadowUnlearner(setup, run.plugin, run.params, run.seed) if "method" in needs else None
    key = (plugin.spec.qualified_name, json.dumps(attack.hparams.as_dict(), sort_keys=True, default=str),
           json.dumps(unlearner.label, sort_keys=True, default=str) if unlearner else "")

    def on(model: nn.Module, role: str) -> AttackRun:
        return _attack_run(attack, setup.outputs(model), attack_context(setup, plugin, seed, role, unlearner))

    unlearned = on(run.model, "unlearned")
    if key not in setup._attack_memo:
        setup._attack_memo[key] = (on(setup.original, "original"),
                                   tuple(on(g.model, "gold") for g in setup.golds))
    original, golds = setup._attack_memo[key]
    return AttackResults(plugin, attack.hparams.as_dict(), unlearned, original, golds)


def _attack_readouts(res: AttackResults) -> list[Readout]:
    out = []
    for key, desc, hib in _ATTACK_FIELDS:
        golds = [getattr(g.metrics, key) for g in res.golds]
        out.append(_model_readout(f"mia_{res.name}_{key}", "fraction", hib, f"{res.name} attack: {desc}",
                                  golds, getattr(res.unlearned.metrics, key), getattr(res.original.metrics, key)))
    return out


def _attack_report(res: AttackResults) -> AttackReport:
    spec = res.plugin.spec
    return AttackReport(spec.name, spec.dist, spec.version, {"params": res.params, **res.unlearned.settings},
                        res.unlearned.as_dict(), res.original.as_dict(), res.golds[0].as_dict(),
                        golds=[g.as_dict() for g in res.golds],
                        roc={"unlearned": res.unlearned.roc, "original": res.original.roc, "gold": res.golds[0].roc},
                        needs=sorted(getattr(res.plugin.cls, "needs", ())))


def _avg_gap_terms(o: ModelOutputs, m: AttackMetrics) -> dict[str, float]:
    return {"test_acc": 100 * R.accuracy(o.test_logits, o.test_labels),
            "retain_acc": 100 * R.accuracy(o.retain_logits, o.retain_labels),
            "forget_acc": 100 * R.accuracy(o.forget_logits, o.forget_labels),
            "mia": 100 * m.member_rate}


def _avg_gap_readout(u: ModelOutputs, o: ModelOutputs, golds: list[ModelOutputs],
                     attacks: Sequence[AttackResults]) -> Readout:
    """NatMU's AvgGap; its MIA term uses ``entropy-lr`` (NatMU's own MIA) when audited, else the first attack."""
    res = next((a for a in attacks if a.name == "entropy-lr"), attacks[0])
    gaps_gold = [_avg_gap_terms(g, m.metrics) for g, m in zip(golds, res.golds)]
    return _distance_readout(
        "avg_gap", _PCT, f"NatMU AvgGap: mean |gap| to gold of test, retain and forget accuracy and the "
        f"{res.name} attack's D_f member rate (MIA term), in %",
        R.avg_gap(_avg_gap_terms(u, res.unlearned.metrics), gaps_gold[0]),
        R.avg_gap(_avg_gap_terms(o, res.original.metrics), gaps_gold[0]),
        [R.avg_gap(g, gaps_gold[0]) for g in gaps_gold[1:]])


def _entropy_histograms(outputs: dict[str, ModelOutputs], n_classes: int) -> dict[str, Any]:
    bins = np.linspace(0.0, float(np.log(n_classes)), 21)
    return {"bin_edges": bins.tolist(),
            **{k: np.histogram(R.entropies(v.forget_logits), bins=bins)[0].tolist() for k, v in outputs.items()}}


def streisand_verdicts(setup: AuditSetup, u: ModelOutputs, o: ModelOutputs, golds: list[ModelOutputs],
                       attacks: Sequence[AttackResults]) -> list[V.Verdict]:
    """Every over/under-forgetting check of :mod:`muaudit.verdicts` for one unlearned model."""
    def acc(m: ModelOutputs) -> float:
        return R.accuracy(m.forget_logits, m.forget_labels)

    correct = (u.forget_logits.argmax(1) == u.forget_labels).numpy()
    out = [V.forget_accuracy_verdict(correct, [acc(g) for g in golds], acc(o)),
           V.forget_entropy_verdict(R.entropies(u.forget_logits), [R.entropies(g.forget_logits) for g in golds],
                                    R.entropies(o.forget_logits), derive_seed(setup.task.seed, "verdict"))]
    for res in attacks:
        m = res.unlearned
        out += V.attack_verdicts(res.name, m.metrics.auc, m.intervals.auc, [g.metrics.auc for g in res.golds],
                                 res.original.metrics.auc, m.metrics.member_rate, m.intervals.member_rate,
                                 [g.metrics.member_rate for g in res.golds], res.original.metrics.member_rate)
    return out


def _challenge_summary(score: Any) -> dict[str, Any]:
    eps = np.asarray(score.epsilons)
    return {"forgetting_quality": score.forgetting_quality, "score": score.score,
            "retain_ratio": score.retain_ratio, "test_ratio": score.test_ratio,
            "epsilon_mean": float(eps.mean()), "epsilon_max": float(eps.max()),
            "most_exposed_forget_positions": np.argsort(-eps, kind="stable")[:10].tolist(),
            "n_unlearned": score.n_unlearned, "n_gold": score.n_gold, "max_epsilon": score.max_epsilon,
            "delta": score.delta, "bin_width": score.bin_width, "notes": list(score.notes)}


def challenge_evaluation(setup: AuditSetup, run: MethodRun, n_models: int) -> tuple[list[Readout], dict[str, Any]]:
    """The NeurIPS 2023 challenge score from ``n_models`` unlearned runs and ``n_models`` gold models.

    The method runs ``n_models`` times on the original with seeds derived from its own; ``2 * n_models`` gold
    models come from the shadow bank (role ``challenge-gold``, the task's recipe on D_r): the first half is the
    reference, the second half is scored against it as a stand-in for a perfect unlearner, which gives the noise
    floor (the challenge's F stays well below 1 even for identical distributions). Signal: logit-scaled confidence
    on D_f.
    """
    from muaudit.challenge import challenge_score

    bank, task = shadow_bank(setup), setup.task
    forget = np.asarray(task.forget_indices, dtype=np.int64)
    retain = np.setdiff1d(np.arange(bank.n_train), forget)
    golds = [ModelRequest("challenge-gold", retain, derive_seed(task.seed, "challenge-gold", j))
             for j in range(2 * n_models)]

    def stats_of(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
        return R.logit_scaled_confidence(logits, labels.expand(logits.shape[0], -1))

    def accuracies(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
        return (logits.argmax(-1) == labels).double().mean(-1).numpy()

    gold_phi = stats_of(bank.logits(golds, forget), setup.forget.y)
    gold_ra = accuracies(bank.logits(golds, retain), setup.retain.y)
    gold_ta = accuracies(bank.logits(golds, bank.test_index(np.arange(len(setup.data.test)))), setup.data.test.y)
    outs = [setup.outputs(run_method(setup, run.plugin, run.params, derive_seed(run.seed, "challenge", j)).model)
            for j in range(n_models)]
    u_phi = np.stack([R.logit_scaled_confidence(o.forget_logits, o.forget_labels) for o in outs])
    u_ra = np.array([R.accuracy(o.retain_logits, o.retain_labels) for o in outs])
    u_ta = np.array([R.accuracy(o.test_logits, o.test_labels) for o in outs])
    ref, alt = slice(0, n_models), slice(n_models, 2 * n_models)
    unlearned = challenge_score(u_phi, gold_phi[ref], u_ra, gold_ra[ref], u_ta, gold_ta[ref])
    floor = challenge_score(gold_phi[alt], gold_phi[ref], gold_ra[alt], gold_ra[ref], gold_ta[alt], gold_ta[ref])
    desc = (f"NeurIPS 2023 unlearning challenge, {n_models} unlearned vs {n_models} gold models; the gold-vs-gold "
            f"column scores {n_models} other gold models, i.e. what a perfect unlearner reaches (higher is better)")
    readouts = [Readout("challenge_forgetting_quality", "distance", "fraction", True, "forgetting quality F; " + desc,
                        unlearned.forgetting_quality, None, None, None, (floor.forgetting_quality,)),
                Readout("challenge_score", "distance", "fraction", True, "F x retain and test accuracy ratios to gold; "
                        + desc, unlearned.score, None, None, None, (floor.score,))]
    return readouts, {"unlearned": _challenge_summary(unlearned), "gold_vs_gold": _challenge_summary(floor),
                      "signal": "logit-scaled confidence on D_f", "source": unlearned.source,
                      "unlearned_seeds": [derive_seed(run.seed, "challenge", j) for j in range(n_models)]}


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
    u, o = setup.outputs(run.model), setup.outputs(setup.original)
    golds = [setup.outputs(g.model) for g in setup.golds]
    results = [run_attack(setup, plugin, run, params) for plugin, params in pairs]
    readouts = (_accuracy_readouts(u, o, golds) + _clean_label_readout(setup, u, o, golds)
                + _output_distance_readouts(u, o, golds)
                + _entropy_readouts(u, o, golds)
                + _parameter_readouts(run.model, setup.original, [g.model for g in setup.golds])
                + [r for res in results for r in _attack_readouts(res)] + [_avg_gap_readout(u, o, golds, results)])
    challenge = None
    if challenge_models:
        extra, challenge = challenge_evaluation(setup, run, challenge_models)
        readouts += extra
    verdicts = streisand_verdicts(setup, u, o, golds, results)
    return Scorecard(
        method=_method_info(run), task=_task_info(setup.task), readouts=tuple(readouts),
        attacks=tuple(_attack_report(res) for res in results),
        entropy_histograms=_entropy_histograms({"original": o, "gold": golds[0], "unlearned": u},
                                               setup.data.n_classes),
        provenance=_provenance(setup, run, [res.plugin for res in results], derive_seed(setup.task.seed, "attack")),
        timings=_timings(setup, run), verdicts=tuple(verdicts), verdict_summary=V.summary(verdicts),
        challenge=challenge)


def _method_info(run: MethodRun) -> dict[str, Any]:
    cls = run.plugin.cls
    info = {"name": run.plugin.spec.name, "summary": cls.summary, "paper": cls.paper,
            "params": run.params, "needs": sorted(cls.needs), "seed": run.seed}
    return info | ({"preset": run.preset} if run.preset is not None else {})


def _task_info(task: Task) -> dict[str, Any]:
    return {"name": task.name, "hash": task.content_hash(), "dataset": task.dataset.name,
            "forget": {k: v for k, v in vars(task.forget).items() if v is not None},
            "forget_size": len(task.forget_indices or ()), "arch": task.model.arch, "seed": task.seed,
            "spec": task.to_dict() | {"dataset": {"name": task.dataset.name,
                                                  "val_fraction": task.dataset.val_fraction}}}


def _provenance(setup: AuditSetup, run: MethodRun, attacks: Sequence[LoadedPlugin], attack_seed: int
                ) -> dict[str, Any]:
    source = {k: v for k, v in setup.original_source.items() if k != "train_seconds"}
    return {"versions": versions(), "device": str(setup.device), "method_plugin": run.plugin.provenance(),
            "attack_plugins": [a.provenance() for a in attacks], "original": source,
            "seeds": {"task": setup.task.seed, "method": run.seed, "gold": [g.seed for g in setup.golds],
                      "attack": attack_seed},
            "gold_models": len(setup.golds),
            "gold_state_sha256": [state_dict_sha256(g.model.state_dict()) for g in setup.golds],
            "unlearned_state_sha256": state_dict_sha256(run.model.state_dict())}


def _timings(setup: AuditSetup, run: MethodRun) -> dict[str, Any]:
    gold_seconds = float(np.mean([g.train_seconds for g in setup.golds]))
    return {"method_seconds": run.seconds, "train_stats_seconds": run.stats_seconds,
            "gold_seconds": gold_seconds, "speedup_vs_gold": gold_seconds / max(run.seconds, 1e-9),
            "gold_from_cache": all(g.from_cache for g in setup.golds),
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
