"""The conformance kit: checks that any method or attack plugin can run, and a pytest entry for them.

Each check takes a prepared :class:`~muaudit.audit.AuditSetup` (e.g. from :func:`tiny_setup`), a loaded plugin and
its parameters, and raises ``AssertionError`` with a clear message when the contract is broken.

Methods (:func:`check_method` runs them all):

- :func:`check_does_not_mutate_input`: the method leaves the data it is handed (its private copies, the training
  split given to ``compute_train_stats`` included) and the audit's data and models (the original's weights and
  buffers included) bit-identical.
- :func:`check_seed_determinism`: the same seed gives bit-identical weights (unless the method declares
  ``deterministic = False``).
- :func:`check_refuses_undeclared_data`: asking ``MethodData`` for undeclared data raises.
- :func:`check_returns_same_architecture`: the returned model has the original's state-dict keys, shapes and dtypes.

Attacks (:func:`check_attack` runs them all; see there for the statistical tolerances):

- :func:`check_attack_orientation`: members score higher where D_f is memorised.
- :func:`check_attack_null`: on gold models (never trained on D_f) D_f and held-out data are alike (AUC ~ 0.5).
- :func:`check_attack_seed_determinism`, :func:`check_attack_does_not_mutate_input`,
  :func:`check_attack_scores_valid` (finite, 1-D, one member score per D_f example or per declared position).

:func:`parametrize_with_checks` turns plugins and checks into pytest parameters, in the style of scikit-learn's.

:func:`judge_defaults` applies the acceptance rule of task-matched defaults (does a run move the forget error
toward gold without collapse?), used by ``tests/test_defaults.py`` and ``reports/scripts/acceptance.py``.
"""
from __future__ import annotations

import atexit
import dataclasses
import math
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from scipy import stats
from torch import nn

from muaudit.attacking import AttackResults, AttackRun, _check_untouched, _reachable_tensors, attack_context, run_attack
from muaudit.audit import AuditSetup, prepare, run_method
from muaudit.base import AttackScores, MembershipAttack, ModelOutputs, MethodContext, MethodData, UnlearningMethod
from muaudit.cache import TensorCache
from muaudit.checkpoint import state_dict_sha256
from muaudit.errors import PluginValidationError, UndeclaredDataError, UnknownPluginError
from muaudit.plugins import ATTACKS, METHODS, LoadedPlugin, PluginSpec, discover, load_by_name, resolve, validate_plugin
from muaudit.runs import MethodRun, ShadowUnlearner
from muaudit.seal import AuditFingerprint, audit_tensors, clone_outputs, outputs_changes
from muaudit.task import NAMED_TASKS, Task
from muaudit.training import derive_seed

#: Significance level of the attack checks' statistical tests (Mann-Whitney U, the test behind the AUC). At this
#: level orientation needs AUC - 0.5 above about 3.1 null standard errors (one-sided) and the null accepts
#: |AUC - 0.5| up to about 3.3 of them (two-sided); the standard error shrinks with the sample sizes.
ALPHA = 1e-3
#: How far :func:`memorised_outputs` raises a forget example's true-class logit (a factor e^4 ~ 55 on its odds).
MEMORISED_MARGIN = 4.0


def tiny_setup(cache_dir: str | Path, task: Task | str = "digits", gold_count: int = 2) -> AuditSetup:
    """A CPU audit set-up on a named (digits-scale) task with a private cache directory."""
    resolved = NAMED_TASKS[task] if isinstance(task, str) else task
    return prepare(resolved, gold_count=gold_count, cache=TensorCache(cache_dir), device=torch.device("cpu"))


_SHARED: dict[str, AuditSetup] = {}


def shared_tiny_setup() -> AuditSetup:
    """One digits set-up per process, in a temporary cache directory removed at exit (what a check runs on when
    it is given no set-up)."""
    if "digits" not in _SHARED:
        root = tempfile.mkdtemp(prefix="muaudit-conformance-")
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _SHARED["digits"] = tiny_setup(root)
    return _SHARED["digits"]


def load_method(name: str) -> LoadedPlugin:
    """Load a method through its entry point, exactly as the CLI does."""
    return load_by_name(METHODS, name)


def load_attack(name: str) -> LoadedPlugin:
    """Load an attack through its entry point, exactly as the CLI does."""
    return load_by_name(ATTACKS, name)


# ------------------------------------------------------------------------------------------ methods
@contextmanager
def _contract(where: str) -> Iterator[None]:
    """Turn muaudit's detection of a contract violation (:class:`PluginValidationError`) into an assertion."""
    try:
        yield
    except PluginValidationError as exc:
        raise AssertionError(str(exc) if where in str(exc) else f"{where}: {exc}") from None


@contextmanager
def _fresh_train_stats(setup: AuditSetup, plugin: LoadedPlugin) -> Iterator[AuditSetup]:
    """``setup`` with an empty cache when the method declares ``train_stats``, so that ``compute_train_stats``
    runs (and is checked) instead of being read from the cache."""
    if "train_stats" not in plugin.cls.needs:
        yield setup
        return
    with tempfile.TemporaryDirectory(prefix="muaudit-stats-") as root:
        yield dataclasses.replace(setup, cache=TensorCache(root), _outputs=None, _attack_memo={},
                                  _attack_instances={}, _bank=None)


def check_does_not_mutate_input(setup: AuditSetup, plugin: LoadedPlugin, params: dict[str, Any]) -> None:
    """Neither the model nor the data a method is handed may change: the method's own copies (detected by
    :func:`~muaudit.runs.run_method`; ``compute_train_stats`` runs on an empty cache) and the audit's data and
    models (fingerprinted before and after)."""
    where = plugin.spec.describe()
    before = AuditFingerprint.of(audit_tensors(setup))
    with _fresh_train_stats(setup, plugin) as fresh:
        try:
            run_method(fresh, plugin, params, seed=1)
        except PluginValidationError as exc:
            if "in place" in str(exc):
                raise AssertionError(str(exc)) from None
            raise
    changed = before.changed(audit_tensors(setup))
    assert not changed, f"{where} modified the audit's {', '.join(changed[:3])}"


def check_seed_determinism(setup: AuditSetup, plugin: LoadedPlugin, params: dict[str, Any]) -> None:
    """Two runs with the same seed give bit-identical weights (not checked for ``deterministic = False``)."""
    if not plugin.cls.deterministic:
        return
    first = run_method(setup, plugin, params, seed=7).model.state_dict()
    second = run_method(setup, plugin, params, seed=7).model.state_dict()
    assert state_dict_sha256(first) == state_dict_sha256(second), (
        f"{plugin.spec.describe()} is not deterministic for a fixed seed")


def check_refuses_undeclared_data(setup: AuditSetup, plugin: LoadedPlugin, params: dict[str, Any] | None = None
                                  ) -> None:
    """The method runs on only the data it declared: the :class:`MethodData` it is handed raises on every other
    need, and its ``unlearn`` (run as the audit runs it) asks for none of them."""
    where = plugin.spec.describe()
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
        raise AssertionError(f"{where} could reach undeclared data {need!r}")
    try:
        run_method(setup, plugin, dict(params or {}), seed=5)
    except UndeclaredDataError as exc:
        raise AssertionError(str(exc)) from None


def architecture_differences(original: nn.Module, returned: nn.Module) -> list[str]:
    """How ``returned``'s state dict differs from ``original``'s in keys, shapes and dtypes (empty if it does not)."""
    want, got = original.state_dict(), returned.state_dict()
    diffs = [f"missing {k!r}" for k in want if k not in got] + [f"unexpected {k!r}" for k in got if k not in want]
    for key in (k for k in want if k in got):
        a, b = want[key], got[key]
        if a.shape != b.shape or a.dtype != b.dtype:
            diffs.append(f"{key!r}: {tuple(b.shape)} {b.dtype} instead of {tuple(a.shape)} {a.dtype}")
    return diffs


def check_returns_same_architecture(setup: AuditSetup, plugin: LoadedPlugin, params: dict[str, Any]) -> None:
    """The returned model is a module with the original's state-dict keys, shapes and dtypes, all finite."""
    where = plugin.spec.describe()
    with _contract(where):
        run = run_method(setup, plugin, params, seed=3)
    diffs = architecture_differences(setup.original, run.model)
    assert not diffs, f"{where} returned another architecture: {'; '.join(diffs[:3])}"


def check_method(setup: AuditSetup, plugin: LoadedPlugin, params: dict[str, Any] | None = None) -> None:
    """Run every generic check on one method."""
    for check in METHOD_CHECKS:
        check(setup, plugin, dict(params or {}))


METHOD_CHECKS: tuple[Callable[..., None], ...] = (
    check_does_not_mutate_input, check_seed_determinism, check_refuses_undeclared_data,
    check_returns_same_architecture)


# ------------------------------------------------------------------------------------------ attacks
class DoNothing(UnlearningMethod):
    """The method that returns the original unchanged: the method under audit for attacks that need one."""

    name = "do-nothing"
    summary = "Return the original model unchanged (the conformance kit's method for attacks that need one)."
    paper = "none (muaudit.testing)"

    def unlearn(self, model: nn.Module, data: MethodData, ctx: MethodContext) -> nn.Module:
        return model


def unregistered_plugin(cls: type, group: str) -> LoadedPlugin:
    """A plugin class that no installed distribution registers, loaded (and validated) as if it were."""
    import muaudit

    point = EntryPoint(getattr(cls, "name", "") or cls.__name__, f"{cls.__module__}:{cls.__qualname__}", group)
    dist = "muaudit" if cls.__module__.startswith("muaudit.") else "unregistered"
    spec = PluginSpec(point.name, group, dist, muaudit.__version__ if dist == "muaudit" else "0", point)
    validate_plugin(spec, cls)
    return LoadedPlugin(spec, cls)


def _method_run(setup: AuditSetup, plugin: LoadedPlugin, method: LoadedPlugin | None,
                method_params: Mapping[str, Any] | None) -> MethodRun | None:
    """The run an attack that needs the method under audit scores (``method``, default :class:`DoNothing`)."""
    if "method" not in plugin.cls.needs:
        return None
    return run_method(setup, method or unregistered_plugin(DoNothing, METHODS), dict(method_params or {}), seed=0)


def _results(setup: AuditSetup, plugin: LoadedPlugin, params: Mapping[str, Any], method: LoadedPlugin | None = None,
             method_params: Mapping[str, Any] | None = None) -> AttackResults:
    """The attack on the original and gold models (memoised per set-up by :func:`run_attack`)."""
    with _contract(plugin.spec.describe()):
        return run_attack(setup, plugin, _method_run(setup, plugin, method, method_params), dict(params))


def _scores_of(run: AttackRun) -> tuple[np.ndarray, np.ndarray]:
    """The member and non-member scores of one attack run."""
    assert run.scores is not None
    return np.asarray(run.scores.members), np.asarray(run.scores.nonmembers)


def _auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    from muaudit.metrics import attack_metrics

    return attack_metrics(members, nonmembers, None).auc


def memorised_outputs(outputs: ModelOutputs, margin: float = MEMORISED_MARGIN) -> ModelOutputs:
    """``outputs`` of a model that memorised D_f: every forget example's true-class logit raised by ``margin``
    (its loss falls, its confidence rises); the retain and test outputs are unchanged."""
    logits = outputs.forget_logits.clone()
    logits[torch.arange(len(logits)), outputs.forget_labels] += margin
    return dataclasses.replace(clone_outputs(outputs), forget_logits=logits)


def check_attack_orientation(setup: AuditSetup, plugin: LoadedPlugin, params: Mapping[str, Any], *,
                             method: LoadedPlugin | None = None, method_params: Mapping[str, Any] | None = None
                             ) -> None:
    """Members score higher on outputs where D_f is memorised: the AUC of D_f against the attack's non-members is
    above 0.5, significantly (one-sided Mann-Whitney U test, p < :data:`ALPHA`).

    Which outputs: for an attack without shadow models, the original's outputs with D_f memorised
    (:func:`memorised_outputs`): the original's own are no test of direction on a well-generalising task
    (measured on digits: D_f against held-out data, AUC 0.53 for ``loss``, p = 0.19). A shadow-model attack
    calibrates each example against shadows trained by the recipe, so only a real model trained on D_f is a
    member to it (a D_f more confident than any IN shadow can look *less* like one to LiRA's Gaussians): it is
    scored on the original itself (measured on digits: ``lira`` AUC 0.64 with 8 shadows, ``shadow-xgb`` 0.81).
    """
    if "shadows" in plugin.cls.needs:
        members, nonmembers = _scores_of(_results(setup, plugin, params, method, method_params).original)
        what = "the original model"
    else:
        outputs = memorised_outputs(setup.outputs(setup.original))
        scores, _ = _score_once(setup, plugin, params, method, method_params, outputs)
        members, nonmembers = np.asarray(scores.members, float), np.asarray(scores.nonmembers, float)
        what = "outputs with D_f memorised"
    p = stats.mannwhitneyu(members, nonmembers, alternative="greater").pvalue
    auc = _auc(members, nonmembers)
    assert p < ALPHA, (f"{plugin.spec.describe()} does not rank members higher on {what}: AUC {auc:.3f} "
                       f"({len(members)} members, {len(nonmembers)} non-members; one-sided p = {p:.2g}, "
                       f"need < {ALPHA:g})")


def check_attack_null(setup: AuditSetup, plugin: LoadedPlugin, params: Mapping[str, Any], *,
                      method: LoadedPlugin | None = None, method_params: Mapping[str, Any] | None = None) -> None:
    """Non-members against non-members: on every gold model (never trained on D_f) the AUC of D_f against the
    attack's non-members is 0.5 within sampling error (two-sided Mann-Whitney U test, p >= :data:`ALPHA`)."""
    for j, gold in enumerate(_results(setup, plugin, params, method, method_params).golds):
        members, nonmembers = _scores_of(gold)
        p = stats.mannwhitneyu(members, nonmembers, alternative="two-sided").pvalue
        auc = _auc(members, nonmembers)
        assert p >= ALPHA, (f"{plugin.spec.describe()} separates D_f from non-members on gold model {j}, which never "
                            f"trained on D_f: AUC {auc:.3f} ({len(members)} vs {len(nonmembers)}; two-sided "
                            f"p = {p:.2g} < {ALPHA:g})")


def _score_once(setup: AuditSetup, plugin: LoadedPlugin, params: Mapping[str, Any], method: LoadedPlugin | None,
                method_params: Mapping[str, Any] | None, outputs: ModelOutputs | None = None
                ) -> tuple[AttackScores, list[str]]:
    """A fresh instance of the attack scores a private copy of ``outputs`` (default: the original's) in the role
    of the original, as the audit would; returns the scores and the names of the outputs it modified."""
    where = plugin.spec.describe()
    run = _method_run(setup, plugin, method, method_params)
    unlearner = ShadowUnlearner(setup, run.plugin, run.params, run.seed) if run else None
    ctx = attack_context(setup, plugin, derive_seed(setup.task.seed, "attack"), "original", unlearner)
    outputs = outputs or setup.outputs(setup.original)
    given = clone_outputs(outputs)
    with _contract(where):
        scores = plugin.cls(**params).score(given, ctx)
    return scores, outputs_changes("outputs", given, outputs)


def check_attack_seed_determinism(setup: AuditSetup, plugin: LoadedPlugin, params: Mapping[str, Any], *,
                                  method: LoadedPlugin | None = None, method_params: Mapping[str, Any] | None = None
                                  ) -> None:
    """Two fresh instances with the same seed give identical scores and threshold."""
    first, _ = _score_once(setup, plugin, params, method, method_params)
    second, _ = _score_once(setup, plugin, params, method, method_params)
    same = (np.array_equal(first.members, second.members) and np.array_equal(first.nonmembers, second.nonmembers)
            and first.threshold == second.threshold)
    assert same, f"{plugin.spec.describe()} is not deterministic for a fixed seed"


def check_attack_does_not_mutate_input(setup: AuditSetup, plugin: LoadedPlugin, params: Mapping[str, Any], *,
                                       method: LoadedPlugin | None = None,
                                       method_params: Mapping[str, Any] | None = None) -> None:
    """The outputs an attack scores, and what it can reach (the audit's data and models, the shadow bank), stay
    bit-identical."""
    needs = frozenset(plugin.cls.needs)
    before = AuditFingerprint.of(_reachable_tensors(setup, needs))
    _, changed = _score_once(setup, plugin, params, method, method_params)
    where = plugin.spec.describe()
    assert not changed, f"{where} modified its input {', '.join(changed)} in place"
    with _contract(where):
        _check_untouched(setup, before, needs, where)


def check_attack_scores_valid(setup: AuditSetup, plugin: LoadedPlugin, params: Mapping[str, Any], *,
                              method: LoadedPlugin | None = None, method_params: Mapping[str, Any] | None = None
                              ) -> None:
    """:class:`AttackScores` with non-empty 1-D finite scores, one member score per D_f example (or per position
    listed in ``settings["member_positions"]``), a finite threshold or ``None`` and a dict of settings."""
    scores, _ = _score_once(setup, plugin, params, method, method_params)
    where = plugin.spec.describe()
    assert isinstance(scores, AttackScores), f"{where} returned {type(scores).__name__}, not AttackScores"
    for label, values in (("member", scores.members), ("non-member", scores.nonmembers)):
        array = np.asarray(values)
        assert array.ndim == 1 and len(array) > 0, f"{where}: {label} scores must be a non-empty 1-D array"
        assert np.issubdtype(array.dtype, np.number) and np.isfinite(array).all(), (
            f"{where}: {label} scores must be finite numbers")
    assert isinstance(scores.settings, dict), f"{where}: settings must be a dict"
    n_forget = len(setup.forget)
    positions = scores.settings.get("member_positions", range(n_forget))
    assert len(positions) == len(scores.members), (
        f"{where}: {len(scores.members)} member scores for {len(positions)} D_f examples")
    assert len(set(positions)) == len(positions) and all(0 <= int(i) < n_forget for i in positions), (
        f"{where}: member_positions must be distinct positions in D_f (0..{n_forget - 1})")
    threshold = scores.threshold
    assert threshold is None or (isinstance(threshold, (int, float, np.number)) and math.isfinite(threshold)), (
        f"{where}: the threshold must be a finite number or None, got {threshold!r}")


ATTACK_CHECKS: tuple[Callable[..., None], ...] = (
    check_attack_scores_valid, check_attack_does_not_mutate_input, check_attack_seed_determinism,
    check_attack_orientation, check_attack_null)


def check_attack(setup: AuditSetup, plugin: LoadedPlugin, params: Mapping[str, Any] | None = None, *,
                 method: LoadedPlugin | None = None, method_params: Mapping[str, Any] | None = None) -> None:
    """Run every generic check on one attack.

    The statistical checks: orientation on outputs where D_f is memorised (:func:`check_attack_orientation`), null
    on the gold models, which never saw D_f; both use a Mann-Whitney U test at level :data:`ALPHA`, so the
    tolerance follows the sample sizes. An attack that needs the method under audit (``needs`` holds
    ``"method"``) is run with ``method`` (default :class:`DoNothing`: the original stays as exposed). Shadow-model
    attacks train their shadows into the set-up's cache: pass cheap ``params`` (e.g. ``{"n_shadows": 8}``).
    """
    for check in ATTACK_CHECKS:
        check(setup, plugin, dict(params or {}), method=method, method_params=method_params)


# ------------------------------------------------------------------------------------------ pytest entry
@dataclass(frozen=True)
class Check:
    """One check bound to one plugin and its parameters; call it with a set-up (default: :func:`shared_tiny_setup`)."""

    plugin: LoadedPlugin
    func: Callable[..., None]
    params: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.func.__name__

    def __call__(self, setup: AuditSetup | None = None) -> None:
        self.func(setup or shared_tiny_setup(), self.plugin, dict(self.params))

    def __repr__(self) -> str:
        return f"{self.name}({self.plugin.spec.name})"


PluginLike = str | LoadedPlugin | type
Expected = Mapping[str, Mapping[str, str]] | Callable[[LoadedPlugin], Mapping[str, str]]


def as_plugin(plugin: PluginLike) -> LoadedPlugin:
    """A :class:`LoadedPlugin` from a loaded plugin, a name (method or attack, ``dist:name`` when ambiguous) or a
    plugin class (registered or not)."""
    if isinstance(plugin, LoadedPlugin):
        return plugin
    if isinstance(plugin, type):
        return _class_plugin(plugin)
    found = []
    for group in (METHODS, ATTACKS):
        try:
            found.append(resolve(group, plugin))
        except UnknownPluginError:
            continue
    if len(found) != 1:
        kinds = " and ".join(s.describe() for s in found) or "no method or attack"
        raise ValueError(f"{plugin!r} names {kinds}; pass the LoadedPlugin (load_method / load_attack) instead")
    return load_by_name(found[0].group, found[0].qualified_name)


def _class_plugin(cls: type) -> LoadedPlugin:
    group = METHODS if issubclass(cls, UnlearningMethod) else ATTACKS if issubclass(cls, MembershipAttack) else None
    if group is None:
        raise TypeError(f"{cls.__name__} is neither an UnlearningMethod nor a MembershipAttack")
    value = f"{cls.__module__}:{cls.__qualname__}"
    for spec in discover(group):
        if spec.entry_point.value == value:
            return load_by_name(group, spec.qualified_name)
    return unregistered_plugin(cls, group)


def checks_for(plugin: LoadedPlugin) -> tuple[Callable[..., None], ...]:
    """The checks that apply to ``plugin`` (a method's or an attack's)."""
    return METHOD_CHECKS if plugin.spec.group == METHODS else ATTACK_CHECKS


def _expected(plugin: LoadedPlugin, expected: Expected | None) -> Mapping[str, str]:
    if expected is None:
        return {}
    found = expected(plugin) if callable(expected) else expected.get(plugin.spec.name, {})
    names = {c.__name__ for c in checks_for(plugin)}
    unknown = sorted(set(found) - names)
    if unknown:
        raise ValueError(f"expected_failed_checks for {plugin.spec.name!r} names unknown checks {unknown} "
                         f"(its checks: {', '.join(sorted(names))})")
    return found


def _marks(plugin: LoadedPlugin, check: Callable[..., None], expected: Mapping[str, str]) -> list[Any]:
    import pytest

    if check.__name__ in expected:
        return [pytest.mark.xfail(strict=True, reason=expected[check.__name__])]
    if check is check_seed_determinism and not plugin.cls.deterministic:
        return [pytest.mark.skip(reason=f"{plugin.spec.name} declares deterministic = False")]
    return []


def parametrize_with_checks(plugins: Sequence[PluginLike], *,
                            params: Mapping[str, Mapping[str, Any]] | None = None,
                            expected_failed_checks: Expected | None = None) -> Any:
    """A ``pytest.mark.parametrize`` over ``("plugin", "check")``: every conformance check of every plugin.

    ``plugins`` are names, :class:`LoadedPlugin` or plugin classes, methods and attacks alike. ``params`` maps a
    plugin's name to the parameters its checks run with (cheap ones: each method check runs the method up to
    twice, shadow attacks train their shadows). ``expected_failed_checks`` maps a plugin's name to
    ``{check name: reason}``, or is a callable from the plugin to such a mapping: those checks are marked
    ``xfail(strict=True)``, so they must fail (a fixed plugin is noticed). Test ids read ``finetune-check_...``.
    Use it like scikit-learn's::

        @parametrize_with_checks(["weight-shrink", "confidence"], params={"weight-shrink": {"factor": 0.2}})
        def test_conformance(plugin, check):
            check()  # or check(setup) with your own muaudit.testing.tiny_setup(...)
    """
    import pytest

    loaded = [as_plugin(p) for p in plugins]
    params = dict(params or {})
    unknown = sorted(set(params) - {p.spec.name for p in loaded})
    if unknown:
        raise ValueError(f"params given for plugins that are not checked: {unknown}")
    cases = []
    for plugin in loaded:
        expected = _expected(plugin, expected_failed_checks)
        for check in checks_for(plugin):
            bound = Check(plugin, check, dict(params.get(plugin.spec.name, {})))
            cases.append(pytest.param(plugin, bound, id=f"{plugin.spec.name}-{check.__name__}",
                                      marks=_marks(plugin, check, expected)))
    return pytest.mark.parametrize("plugin, check", cases)


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
