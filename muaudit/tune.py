"""``muaudit tune``: the same tuning budget for every method, selected on proxy forget sets.

Published comparisons tune each method with a different effort, usually on the evaluation forget set's own
retrained model, so the comparison measures the tuning as much as the method. muaudit's protocol:

1. **Proxy forget sets** (:func:`draw_proxy_tasks`): ``proxies`` forget sets of the same kind and size as the
   audited D_f, disjoint from it (and from each other), each with its own ``proxy_golds`` gold models (the
   task's recipe from a fresh initialisation on D minus the proxy). Random and index forget sets get random
   proxies of the same size from D \\ D_f (disjoint from each other when D \\ D_f is large enough, else drawn
   independently); a full class gets other classes; a class subset the same count from
   other classes; a sub-class other sub-classes; a label-flip set another draw from the same pool, flipped by
   the same rule (its original model is then retrained with the proxy's flipped labels, because the audited
   original was trained on the audited poison). The audited forget set's gold models are never requested, loaded
   or trained: tuning happens before the audit looks at them (``tests/test_tune.py`` proves it by instrumenting
   the model bank).
2. **Configurations** (:func:`draw_configurations`): the method's defaults for the task (its ``auto`` preset)
   plus ``budget - 1`` points of a seeded Latin hypercube (SciPy ``qmc``) over its declared search space
   (:class:`~muaudit.params.Search` on each ``Param``); parameters given by the user are fixed. The budget is
   counted in configurations, each run once on every proxy, so it is the same for every method.
3. **Selection** (:func:`closeness`): for each proxy, the mean over forget error, test error and the ``loss``
   attack's D_f AUC of ``|unlearned - gold| / noise``, where ``gold`` is the proxy gold models' mean and
   ``noise`` = sqrt(gold variance across seeds + the sampling variance of the readout) (binomial for error
   rates, the Mann-Whitney null variance ``(n1 + n2 + 1) / (12 n1 n2)`` for the AUC), so every term is in units
   of the noise floor; plus :data:`COLLAPSE_PENALTY` when the test error rises more than max(2 points, 3 noise
   units) above the worse of the original and the gold models (a collapsed model). The score is the mean over
   proxies; the lowest wins, ties go to the earlier configuration (the default first), and a configuration
   whose run fails (an exception, non-finite weights) scores infinity and is recorded with its reason.

The method runs (every configuration on every proxy) go through the audit's executor (:mod:`muaudit.engine`), so
they spread over worker processes or Ray like the models; the results are the same as in one process. Timings:
``trials_seconds`` sums each configuration's own time (its runs as they measured themselves, wherever they ran,
plus its readouts), ``trials_wall_seconds`` is the wall time of the whole search.

The result (:class:`TuneResult`: chosen parameters, the whole table, budget, proxies, timings) is cached
under the model cache by its configuration, so ``score --tuned`` and ``compare --tune N`` reuse it.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from muaudit.defaults import DEFAULT_BUDGET, DEFAULT_PROXIES, DEFAULT_PROXY_GOLDS
from muaudit.errors import MuauditError, ParameterError, PluginValidationError, TaskError
from muaudit.params import Param, Search
from muaudit.serial import json_safe

if TYPE_CHECKING:  # the CLI imports this module for its defaults: no torch at start-up
    from muaudit.task import Task

TUNE_SCHEMA = 1
TUNE_ATTACK = "loss"
COLLAPSE_PENALTY = 10.0
METRICS = ("forget_error", "test_error", "attack_auc")

#: Documented default space for a method that declares none: its ``lr`` over 1/10..10x its default (log) and
#: its ``epochs`` over 1..3x its default, when it has such parameters.
DEFAULT_SPACE_RULE = "lr: [default/10, default*10] log-uniform; epochs: [1, 3*default]"


# ------------------------------------------------------------------------------------------- search space
def search_space(cls: type, fixed: Mapping[str, Any] = (), where: str | None = None
                 ) -> dict[str, tuple[Param, Search]]:
    """The parameters ``cls`` tunes (declared ``search``, else :data:`DEFAULT_SPACE_RULE`) minus ``fixed``.

    Raises :class:`~muaudit.errors.PluginValidationError` (exit 3) when the method declares no search space and
    has neither an ``lr`` nor an ``epochs`` parameter, and :class:`~muaudit.errors.ParameterError` (exit 2) when
    everything searchable is fixed by the user.
    """
    params = tuple(getattr(cls, "params", ()))
    declared = {p.name: (p, p.search) for p in params if p.search is not None}
    space = declared or _default_space(params)
    if not space:
        raise PluginValidationError(f"{where or 'method ' + repr(cls.display_name())} declares no search space (no "
                                    f"Param has a 'search', and it has no lr or epochs parameter for the default "
                                    f"space: {DEFAULT_SPACE_RULE})")
    free = {k: v for k, v in space.items() if k not in set(fixed) and v[1].size > 1}
    if not free:
        raise ParameterError(f"the search space of {cls.display_name()!r} has nothing left to search: "
                             f"{', '.join(space)} {'are' if len(space) > 1 else 'is'} fixed or single-valued")
    return free


def has_search_space(cls: type, fixed: Mapping[str, Any] = ()) -> bool:
    """Whether :func:`search_space` finds something to search (no exception)."""
    try:
        search_space(cls, fixed)
    except MuauditError:
        return False
    return True


def _default_space(params: Sequence[Param]) -> dict[str, tuple[Param, Search]]:
    space = {}
    for p in params:
        if p.name == "lr" and p.type is float and isinstance(p.default, float) and p.default > 0:
            space[p.name] = (p, Search(p.default / 10, p.default * 10, log=True))
        elif p.name == "epochs" and p.type is int and isinstance(p.default, int) and p.default >= 1:
            space[p.name] = (p, Search(1, max(3 * p.default, 2)))
    return space


def draw_configurations(space: Mapping[str, tuple[Param, Search]], budget: int, seed: int
                        ) -> list[dict[str, Any]]:
    """``budget - 1`` distinct configurations from a seeded Latin hypercube (the default is added by the caller)."""
    from scipy.stats import qmc

    if budget < 1:
        raise ParameterError(f"the tuning budget must be at least 1, got {budget}")
    names = sorted(space)
    sampler = qmc.LatinHypercube(d=len(names), rng=np.random.default_rng(seed))
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _ in range(8):  # a few refills when small discrete spaces produce duplicates
        for row in sampler.random(max(budget - 1 - len(out), 0)):
            config = {n: space[n][1].value(float(u), space[n][0].type) for n, u in zip(names, row)}
            key = json.dumps(config, sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append(config)
        if len(out) >= budget - 1:
            break
    return out[: budget - 1]


# ------------------------------------------------------------------------------------------ proxy sets
def draw_proxy_tasks(task: Task, data: Any, count: int, seed: int) -> list[Task]:
    """``count`` proxy tasks: the forget set redrawn (same kind and size, disjoint from D_f and each other).

    Raises :class:`~muaudit.errors.TaskError` when the task's kind admits no such proxy (e.g. a full class when no
    other class exists).
    """
    if count < 1:
        raise ParameterError(f"at least one proxy forget set is needed, got {count}")
    forget = np.asarray(task.forget_indices or (), dtype=np.int64)
    labels = task.training_split(data).y.numpy()
    rng = np.random.default_rng(seed)
    kind = task.forget.kind
    if kind in ("full-class", "sub-class"):
        return _class_proxies(task, data, count, rng)
    if kind == "class-subset":
        return _class_subset_proxies(task, labels, count, rng)
    pool = np.setdiff1d(np.arange(len(labels)), forget)
    if kind == "label-flip" and task.forget.cls is not None:
        pool = pool[data.train.y.numpy()[pool] == task.forget.cls]
    chunks = _disjoint_draws(pool, len(forget), count, rng, kind)
    return [_proxy(task, data, chunk, j) for j, chunk in enumerate(chunks)]


def _disjoint_draws(pool: np.ndarray, size: int, count: int, rng: np.random.Generator, kind: str
                    ) -> list[np.ndarray]:
    """Disjoint draws when the pool allows it, else independent draws (proxies may then overlap each other, never
    D_f); a pool smaller than one forget set is an error."""
    if size > len(pool):
        raise TaskError(f"cannot draw {count} proxy forget set(s) of {size} examples for a {kind!r} forget set: "
                        f"only {len(pool)} eligible examples lie outside D_f")
    if size * count > len(pool):
        return [np.sort(rng.choice(pool, size=size, replace=False)) for _ in range(count)]
    order = rng.permutation(pool)
    return [np.sort(order[j * size:(j + 1) * size]) for j in range(count)]


def _class_proxies(task: Task, data: Any, count: int, rng: np.random.Generator) -> list[Task]:
    kind, own = task.forget.kind, task.forget.cls
    train = data.train
    labels = (train.fine if kind == "sub-class" else train.y)
    if labels is None:
        raise TaskError(f"a {kind!r} forget set needs fine labels to draw proxy sub-classes")
    values = labels.numpy()
    others = [int(c) for c in np.unique(values) if c != own]
    what = "sub-class" if kind == "sub-class" else "class"
    if len(others) < count:
        raise TaskError(f"cannot draw {count} proxy {what}(es) for a {kind!r} forget set: only "
                        f"{len(others)} other {what}(es) available (use fewer --proxies)")
    chosen = sorted(rng.choice(others, size=count, replace=False).tolist())
    return [_proxy(replace(task, forget=replace(task.forget, cls=c)), data, np.flatnonzero(values == c), j)
            for j, c in enumerate(chosen)]


def _class_subset_proxies(task: Task, labels: np.ndarray, count: int, rng: np.random.Generator) -> list[Task]:
    size, own = len(task.forget_indices or ()), task.forget.cls
    others = [int(c) for c in np.unique(labels) if c != own and (labels == c).sum() >= size]
    if len(others) < count:
        raise TaskError(f"cannot draw {count} proxy class subset(s) of {size}: only {len(others)} other "
                        f"class(es) have that many examples (use fewer --proxies)")
    chosen = sorted(rng.choice(others, size=count, replace=False).tolist())
    out = []
    for j, c in enumerate(chosen):
        members = rng.choice(np.flatnonzero(labels == c), size=size, replace=False)
        out.append(_proxy(replace(task, forget=replace(task.forget, cls=c)), None, np.sort(members), j))
    return out


def _proxy(task: Task, data: Any, indices: np.ndarray, j: int) -> Task:
    from muaudit.task import draw_poison_labels

    poison = None
    if task.poison_labels is not None:
        poison = draw_poison_labels(task.forget, data.train.y.numpy()[indices], data.n_classes,
                                    _proxy_seed(task.seed, j))
    return replace(task, name=f"{task.name}~proxy{j}", forget_indices=tuple(int(i) for i in indices),
                   poison_labels=poison)


def _proxy_seed(seed: int, j: int) -> int:
    from muaudit.training import derive_seed

    return derive_seed(seed, "proxy-poison", j)


# --------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Trial:
    """One configuration on every proxy: its readouts, score and (on failure) the reason."""

    index: int
    params: dict[str, Any]
    is_default: bool
    score: float
    readouts: tuple[dict[str, float], ...] = ()
    collapsed: tuple[bool, ...] = ()
    seconds: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class TuneResult:
    """Everything ``muaudit tune`` decided and measured (JSON round-trip; see the module docstring)."""

    method: dict[str, Any]
    task: dict[str, Any]
    budget: int
    seed: int
    proxies: tuple[dict[str, Any], ...]
    proxy_golds: tuple[dict[str, float], ...]
    criterion: str
    chosen: dict[str, Any]
    chosen_index: int
    default_score: float
    chosen_score: float
    trials: tuple[Trial, ...]
    timings: dict[str, float]
    space: dict[str, str] = field(default_factory=dict)
    schema: int = TUNE_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "TuneResult":
        if raw.get("schema") != TUNE_SCHEMA:
            raise ValueError(f"unsupported tune result schema {raw.get('schema')!r}")
        trials = tuple(Trial(**{**t, "score": _float(t["score"]), "readouts": tuple(t["readouts"]),
                                "collapsed": tuple(t["collapsed"])}) for t in raw["trials"])
        return cls(**{**raw, "proxies": tuple(raw["proxies"]), "proxy_golds": tuple(raw["proxy_golds"]),
                      "trials": trials, "default_score": _float(raw["default_score"]),
                      "chosen_score": _float(raw["chosen_score"])})

    def summary(self) -> dict[str, Any]:
        """What a scorecard's provenance records about the tuning that chose its parameters."""
        return {"budget": self.budget, "seed": self.seed, "proxies": len(self.proxies),
                "proxy_golds_per_proxy": len(self.proxy_golds[0]["forget_error"]) if self.proxy_golds else 0,
                "criterion": self.criterion, "chosen_index": self.chosen_index, "chosen_score": self.chosen_score,
                "default_score": self.default_score, "seconds": self.timings.get("total_seconds"),
                "digest": hashlib.sha256(self.to_json().encode()).hexdigest()}

    def to_markdown(self) -> str:
        names = sorted({k for t in self.trials for k in t.params})
        head = ["#", *names, "score", *[f"{m} (proxy {j})" for j in range(len(self.proxies)) for m in METRICS]]
        lines = [f"# muaudit tune: {self.method['name']} on {self.task['name']} [{self.task['hash'][:12]}]", "",
                 f"Budget {self.budget} configuration(s) x {len(self.proxies)} proxy forget set(s); seed {self.seed}.",
                 f"Criterion: {self.criterion}", "",
                 f"Chosen: #{self.chosen_index} {_params_text(self.chosen)} (score {self.chosen_score:.3f}; "
                 f"default {self.default_score:.3f}). Time {self.timings.get('total_seconds', 0):.1f} s.", "",
                 "Proxy gold models (mean per proxy): " + "; ".join(
                     f"proxy {j}: " + ", ".join(f"{m} {np.mean(g[m]):.3f}" for m in METRICS)
                     for j, g in enumerate(self.proxy_golds)), "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for t in self.trials:
            cells = [f"{t.index}{' (default)' if t.is_default else ''}", *[_cell(t.params.get(n)) for n in names],
                     "failed: " + str(t.error) if t.error else f"{t.score:.3f}"]
            cells += [_cell(r.get(m)) for r in t.readouts for m in METRICS] if t.readouts else []
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def _params_text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "(defaults)"


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _float(value: Any) -> float:
    return math.inf if value is None else float(value)


# ------------------------------------------------------------------------------------------ the criterion
def noise(gold_values: Sequence[float], sampling_sd: float) -> float:
    """sqrt(variance across gold seeds + sampling variance): the unit of every closeness term."""
    var = float(np.var(gold_values, ddof=1)) if len(gold_values) > 1 else 0.0
    return math.sqrt(var + sampling_sd ** 2)


def error_sd(error_percent: float, n: int) -> float:
    """Binomial standard deviation (in points) of an error rate near ``error_percent`` over ``n`` examples."""
    p = min(max(error_percent / 100.0, 1.0 / (n + 1)), 1.0 - 1.0 / (n + 1))
    return 100.0 * math.sqrt(p * (1 - p) / n)


def auc_sd(n_members: int, n_nonmembers: int) -> float:
    """Standard deviation of the Mann-Whitney AUC under the null: sqrt((n1 + n2 + 1) / (12 n1 n2))."""
    return math.sqrt((n_members + n_nonmembers + 1) / (12.0 * n_members * n_nonmembers))


@dataclass(frozen=True)
class ProxyReference:
    """A proxy's gold values (one per gold seed), the original's test error and the noise unit of each readout."""

    golds: dict[str, tuple[float, ...]]
    units: dict[str, float]
    original_test_error: float

    def closeness(self, readouts: Mapping[str, float]) -> tuple[float, bool]:
        return closeness(readouts, self)


def closeness(readouts: Mapping[str, float], ref: ProxyReference) -> tuple[float, bool]:
    """Mean |gap to the gold mean| in noise units over :data:`METRICS`, plus the collapse penalty."""
    terms = [abs(readouts[m] - float(np.mean(ref.golds[m]))) / ref.units[m] for m in METRICS]
    ceiling = max(ref.original_test_error, max(ref.golds["test_error"])) + max(2.0, 3 * ref.units["test_error"])
    collapsed = readouts["test_error"] > ceiling
    return float(np.mean(terms)) + (COLLAPSE_PENALTY if collapsed else 0.0), collapsed


CRITERION = ("mean over proxies of: mean over forget error, test error and the loss attack's D_f AUC of "
             "|unlearned - proxy gold mean| / sqrt(gold variance + sampling variance); plus "
             f"{COLLAPSE_PENALTY:g} when the test error exceeds the worse of original and gold by more than "
             "max(2 points, 3 noise units) (collapse)")


# ------------------------------------------------------------------------------------------------ tuning
@dataclass
class _Proxy:
    task: Task
    setup: Any
    reference: ProxyReference
    description: dict[str, Any]


def tune(setup: Any, plugin: Any, params: Mapping[str, Any] | None = None, budget: int = DEFAULT_BUDGET,
         proxies: int = DEFAULT_PROXIES, proxy_golds: int = DEFAULT_PROXY_GOLDS, seed: int | None = None,
         use_cache: bool = True) -> TuneResult:
    """Tune ``plugin`` on proxy forget sets of ``setup``'s task (see the module docstring).

    ``setup`` needs the task, data and original model only (:func:`muaudit.audit.prepare` with
    ``gold_count=0``); its gold models are never used. ``params`` are fixed by the user and not searched.
    """
    from muaudit.training import derive_seed

    params = dict(params or {})
    if budget < 1:
        raise ParameterError(f"the tuning budget must be at least 1, got {budget}")
    if proxy_golds < 1:
        raise ParameterError(f"each proxy forget set needs at least one gold model, got {proxy_golds}")
    seed = derive_seed(setup.task.seed, "tune") if seed is None else int(seed)
    space = search_space(plugin.cls, params, plugin.spec.describe())
    config = _cache_config(setup, plugin, params, budget, proxies, proxy_golds, seed)
    cached = _load_cached(setup, config) if use_cache else None
    if cached is not None:
        return cached
    result = _run_tuning(setup, plugin, params, space, budget, proxies, proxy_golds, seed)
    _store(setup, config, result)
    return result


def _run_tuning(setup: Any, plugin: Any, params: dict[str, Any], space: Mapping[str, tuple[Param, Search]],
                budget: int, n_proxies: int, proxy_golds: int, seed: int) -> TuneResult:
    start = time.perf_counter()
    proxy_list = [_prepare_proxy(setup, t, proxy_golds)
                  for t in draw_proxy_tasks(setup.task, setup.data, n_proxies, seed)]
    golds_seconds = time.perf_counter() - start
    configs = [{}] + draw_configurations(space, budget, seed)
    trials_start = time.perf_counter()
    scored = _scored_runs(setup, plugin, params, configs, proxy_list, seed)
    trials = [_trial(i, c, [per_proxy[i] for per_proxy in scored], sorted(space)) for i, c in enumerate(configs)]
    trials_wall = time.perf_counter() - trials_start
    best = min(trials, key=lambda t: (t.score, t.index))
    if not math.isfinite(best.score):
        raise PluginValidationError(f"{plugin.spec.describe()} failed in every tuning configuration; first "
                                    f"failure: {trials[0].error}")
    total = time.perf_counter() - start
    return TuneResult(
        method={"name": plugin.spec.name, "distribution": plugin.spec.dist, "version": plugin.spec.version,
                "fixed": params},
        task={"name": setup.task.name, "hash": setup.task.content_hash()}, budget=budget, seed=seed,
        proxies=tuple(p.description for p in proxy_list),
        proxy_golds=tuple({m: list(p.reference.golds[m]) for m in METRICS} for p in proxy_list),
        criterion=CRITERION, chosen={**params, **(best.params if best.index else {})}, chosen_index=best.index,
        default_score=trials[0].score, chosen_score=best.score, trials=tuple(trials),
        timings={"total_seconds": total, "proxy_golds_seconds": golds_seconds,
                 "trials_seconds": float(sum(t.seconds for t in trials)), "trials_wall_seconds": trials_wall},
        space={name: str(s) for name, (_, s) in sorted(space.items())})


def _prepare_proxy(setup: Any, task: Task, gold_count: int) -> _Proxy:
    """The proxy's own audit set-up: the original (retrained only for label-flip), its own gold models."""
    from muaudit.audit import AuditSetup, train_golds, train_original
    from muaudit.engine import executor_of
    from muaudit.shadows import ShadowBank

    bank = ShadowBank(task, setup.data, setup.cache, setup.device, progress=setup.progress,
                      executor=executor_of(setup))  # the audit's executor trains the proxies' too
    original = setup.original if task.poison_labels is None else train_original(bank).model
    proxy = AuditSetup(task, setup.data, original, dict(setup.original_source), [], setup.device, setup.cache,
                       setup.progress, _bank=bank)
    proxy.golds = train_golds(bank, gold_count)
    golds = [_readouts(proxy, g.model) for g in proxy.golds]
    orig = _readouts(proxy, original)
    units = {"forget_error": noise([g["forget_error"] for g in golds],
                                   error_sd(np.mean([g["forget_error"] for g in golds]), len(proxy.forget))),
             "test_error": noise([g["test_error"] for g in golds],
                                 error_sd(np.mean([g["test_error"] for g in golds]), len(setup.data.test))),
             "attack_auc": noise([g["attack_auc"] for g in golds], auc_sd(len(proxy.forget), len(setup.data.test)))}
    reference = ProxyReference({m: tuple(g[m] for g in golds) for m in METRICS}, units, orig["test_error"])
    description = {"name": task.name, "kind": task.forget.kind, "cls": task.forget.cls, "size": len(proxy.forget),
                   "indices_sha256": hashlib.sha256(np.asarray(task.forget_indices, dtype="<i8").tobytes()
                                                    ).hexdigest(),
                   "task_hash": task.content_hash(), "original": orig}
    return _Proxy(task, proxy, reference, description)


def _readouts(setup: Any, model: Any) -> dict[str, float]:
    """Forget error, test error (in %) and the tuning attack's D_f AUC of ``model`` on a (proxy) set-up."""
    from muaudit import readouts as R
    from muaudit.attacking import _attack_run, attack_context
    from muaudit.plugins import ATTACKS, load_by_name
    from muaudit.training import derive_seed

    out = setup.outputs(model)
    plugin = load_by_name(ATTACKS, TUNE_ATTACK)
    ctx = attack_context(setup, plugin, derive_seed(setup.task.seed, "attack"), "unlearned", None)
    auc = _attack_run(plugin.cls(), out, ctx, plugin.spec.describe()).metrics.auc
    return {"forget_error": R.error_percent(out.forget_logits, out.forget_labels),
            "test_error": R.error_percent(out.test_logits, out.test_labels), "attack_auc": float(auc)}


#: The errors that fail one configuration (scored infinity, recorded with the reason) instead of the tuning.
TRIAL_ERRORS = (MuauditError, ArithmeticError, RuntimeError, ValueError)


@dataclass(frozen=True)
class _Scored:
    """One configuration's run on one proxy, scored (the model itself is not kept)."""

    params: dict[str, Any]
    seconds: float
    readouts: dict[str, float] | None = None
    score: float = math.inf
    collapsed: bool = False
    error: str | None = None


def _scored_runs(setup: Any, plugin: Any, fixed: Mapping[str, Any], configs: Sequence[Mapping[str, Any]],
                 proxies: Sequence[_Proxy], seed: int) -> list[list[_Scored]]:
    """``scored[j][i]``: configuration i run on proxy j (common method seeds across configurations) and scored.

    Each proxy's runs go through the audit's executor together
    (:meth:`muaudit.engine.SequentialExecutor.run_grid`), so they may happen on other workers; they are scored
    here, proxy by proxy, so that at most one proxy's unlearned models are held at once."""
    from muaudit.engine import executor_of
    from muaudit.training import derive_seed

    executor = executor_of(setup)
    scored = []
    for j, proxy in enumerate(proxies):
        runs = executor.run_grid(proxy.setup, plugin, [({**fixed, **config}, derive_seed(seed, "method", j))
                                                       for config in configs], keep=TRIAL_ERRORS)
        scored.append([_score(run, proxy) for run in runs])
    return scored


def _score(run: Any, proxy: _Proxy) -> _Scored:
    """``run`` scored against its proxy's gold models; its seconds are the run's own (as it measured itself,
    wherever it ran) plus the readouts here."""
    from muaudit.engine import RunFailure

    if isinstance(run, RunFailure):
        return _Scored({}, 0.0, error=run.reason)
    start, own = time.perf_counter(), run.seconds + run.stats_seconds
    try:
        values = _readouts(proxy.setup, run.model)
        score, fell = proxy.reference.closeness(values)
    except TRIAL_ERRORS as exc:
        return _Scored(dict(run.params), own + time.perf_counter() - start, error=RunFailure.of(exc).reason)
    return _Scored(dict(run.params), own + time.perf_counter() - start, values, score, fell)


def _trial(index: int, config: Mapping[str, Any], scored: Sequence[_Scored], space_names: Sequence[str] = ()
           ) -> Trial:
    """One configuration from its scored run on every proxy: the mean score, or the first proxy's failure."""
    config = dict(config)
    if not config and index == 0 and scored and scored[0].params:  # what the default resolved to (its run's)
        config = {k: v for k, v in scored[0].params.items() if k in space_names}
    done = []
    for one in scored:
        if one.error is not None:
            return Trial(index, config, index == 0, math.inf, tuple(d.readouts for d in done),
                         tuple(d.collapsed for d in done), sum(d.seconds for d in (*done, one)), one.error)
        done.append(one)
    return Trial(index, config, index == 0, float(np.mean([d.score for d in done])), tuple(d.readouts for d in done),
                 tuple(d.collapsed for d in done), sum(d.seconds for d in done))


# --------------------------------------------------------------------------------------------- caching
def _cache_config(setup: Any, plugin: Any, params: Mapping[str, Any], budget: int, proxies: int,
                  proxy_golds: int, seed: int) -> dict[str, Any]:
    return {"role": "tune", "schema": TUNE_SCHEMA, "method": plugin.spec.qualified_name,
            "version": plugin.spec.version, "fixed": json.loads(json.dumps(dict(params), default=str)),
            "task_hash": setup.task.content_hash(), "original": setup.original_source.get("state_sha256"),
            "budget": budget, "proxies": proxies, "proxy_golds": proxy_golds, "seed": seed,
            "attack": TUNE_ATTACK, "criterion": CRITERION}


def result_path(setup: Any, config: Mapping[str, Any]) -> Path:
    key = setup.cache.key(config)
    return Path(setup.cache.root) / "tune" / f"{key}.json"


def _load_cached(setup: Any, config: Mapping[str, Any]) -> TuneResult | None:
    path = result_path(setup, config)
    try:
        raw = json.loads(path.read_text())
        if raw.get("config") != json.loads(json.dumps(dict(config))):
            return None
        return TuneResult.from_dict(raw["result"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store(setup: Any, config: Mapping[str, Any], result: TuneResult) -> None:
    import os
    import tempfile

    from muaudit.files import publish

    path = result_path(setup, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump({"config": config, "result": result.to_dict()}, handle, sort_keys=True)
    publish(tmp, path)

