"""The Python API: audit a method (or compare several) in one call, from a script or a notebook.

>>> import muaudit
>>> card = muaudit.audit("finetune", task="digits", epochs=1)          # doctest: +SKIP
>>> card.verdict_summary, card.to_pandas()                               # doctest: +SKIP
>>> result = muaudit.compare(["finetune", "neggrad"], gold_seeds=3)      # doctest: +SKIP

Everything the command line accepts is accepted here, plus Python objects:

- ``method``: a registered name (``"pgu"`` or ``"dist:pgu"``), an :class:`~muaudit.base.UnlearningMethod`
  subclass (e.g. defined in the notebook) or an instance of one (re-created from the parameters it was given,
  so that every run starts fresh); ``**params`` set its hyperparameters.
- ``model``: ``None`` (muaudit trains the task's original and caches it), a checkpoint path, a state dict or an
  ``nn.Module`` (its state dict is used; give ``arch`` when it is not the task's architecture).
- ``attacks``: a comma-separated string, or a list of names, classes, instances or ``(attack, params)`` pairs.
- ``arch``: a zoo name, or your own builder (a callable or ``"module:callable"``, see :mod:`muaudit.factories`);
  ``strip_prefix``, ``key_map`` and ``normalize`` read a foreign state dict (:mod:`muaudit.adapt`).
- ``device="auto"`` uses CUDA when present, as the CLI does.

A class or instance that is not installed as a plugin is audited as a *local* plugin: its distribution is
``local`` and its version carries a hash of its source, so cached attack runs of an edited class are not reused.
"""
from __future__ import annotations

import hashlib
import inspect
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from muaudit.defaults import DEFAULT_ATTACKS, DEFAULT_RETAIN_SAMPLE

__all__ = ["audit", "compare", "prepare_audit", "method_plugin", "attack_plugins", "LOCAL_DISTRIBUTION"]

LOCAL_DISTRIBUTION = "local"
MethodLike = Any  # str | type[UnlearningMethod] | UnlearningMethod
AttackLike = Any  # str | type[MembershipAttack] | MembershipAttack | tuple[..., dict]


def audit(method: MethodLike, model: Any = None, *, task: Any = "digits", attacks: Any = DEFAULT_ATTACKS,
          gold_seeds: int = 2, device: str = "auto", seed: int | None = None, cache_dir: str | Path | None = None,
          retain_sample: int | None = DEFAULT_RETAIN_SAMPLE, challenge_models: int = 0, arch: Any = None,
          strip_prefix: Sequence[str] = (), key_map: str | None = None, normalize: Any = None,
          data_root: str | None = None, progress: bool = True, executor: Any = None, **params: Any) -> Any:
    """Audit one method against the gold models of ``task``; returns its :class:`~muaudit.results.Scorecard`.

    ``executor`` trains the missing original and gold models: a name (``sequential``, ``processes``, ``ray``) or
    an executor from :func:`muaudit.engine.make_executor`.
    """
    from muaudit.audit import build_scorecard, run_method

    plugin, method_params = method_plugin(method, params)
    loaded_attacks = attack_plugins(attacks)
    with _executor(executor) as workers:
        setup = prepare_audit(model, task=task, gold_seeds=gold_seeds, device=device, cache_dir=cache_dir,
                              retain_sample=retain_sample, arch=arch, strip_prefix=strip_prefix, key_map=key_map,
                              normalize=normalize, data_root=data_root, progress=progress, executor=workers)
        run = run_method(setup, plugin, method_params, seed)
        return build_scorecard(setup, run, loaded_attacks, challenge_models)


def compare(methods: Iterable[MethodLike], model: Any = None, *, params: Mapping[str, Mapping[str, Any]] | None = None,
            task: Any = "digits", attacks: Any = DEFAULT_ATTACKS, gold_seeds: int = 2, device: str = "auto",
            seed: int | None = None, cache_dir: str | Path | None = None,
            retain_sample: int | None = DEFAULT_RETAIN_SAMPLE, challenge_models: int = 0, arch: Any = None,
            strip_prefix: Sequence[str] = (), key_map: str | None = None, normalize: Any = None,
            data_root: str | None = None, progress: bool = True, executor: Any = None) -> Any:
    """Audit several methods on the same task, original and gold models; returns a
    :class:`~muaudit.comparison.Comparison` (a failing method is recorded there, the others still run).

    ``params`` maps a method's name to its hyperparameters.
    """
    from muaudit.audit import build_scorecard, run_method
    from muaudit.comparison import compare_methods

    params = dict(params or {})
    loaded = [method_plugin(m) for m in methods]
    loaded = [(p, {**kw, **dict(params.get(p.spec.name, {}))}) for p, kw in loaded]
    unknown = set(params) - {p.spec.name for p, _ in loaded}
    if unknown:
        from muaudit.errors import ParameterError

        raise ParameterError(f"params given for methods not compared: {', '.join(sorted(unknown))}")
    loaded_attacks = attack_plugins(attacks)
    with _executor(executor) as workers:
        setup = prepare_audit(model, task=task, gold_seeds=gold_seeds, device=device, cache_dir=cache_dir,
                              retain_sample=retain_sample, arch=arch, strip_prefix=strip_prefix, key_map=key_map,
                              normalize=normalize, data_root=data_root, progress=progress, executor=workers)
        return compare_methods(setup, loaded, lambda p, kw: build_scorecard(setup, run_method(setup, p, kw, seed),
                                                                               loaded_attacks, challenge_models))


def prepare_audit(model: Any = None, *, task: Any = "digits", gold_seeds: int = 2, device: str = "auto",
                  cache_dir: str | Path | None = None, retain_sample: int | None = DEFAULT_RETAIN_SAMPLE,
                  arch: Any = None, strip_prefix: Sequence[str] = (), key_map: str | None = None,
                  normalize: Any = None, data_root: str | None = None, progress: bool = True,
                  executor: Any = None) -> Any:
    """The shared set-up (data, original and gold models) of :func:`audit` and :func:`compare`, for running
    :func:`muaudit.audit.run_method` and :func:`muaudit.audit.build_scorecard` yourself.

    An executor named here (``"processes"``) serves the set-up's later training too and lives as long as it; to
    stop a process pool's workers earlier, pass an executor object and close it (``with ProcessExecutor(2) as
    executor: ...``). :func:`audit` and :func:`compare` close an executor they made from its name."""
    from muaudit.adapt import StateAdapter, parse_normalize
    from muaudit.cache import TensorCache
    from muaudit.engine import make_executor
    from muaudit.errors import ParameterError
    from muaudit.models import prepare
    from muaudit.training import resolve_device

    if not isinstance(gold_seeds, int) or gold_seeds < 1:
        raise ParameterError(f"gold_seeds must be a positive integer, got {gold_seeds!r}")
    resolved_task, arch_name = _task_and_arch(task, arch, model is None)
    if isinstance(normalize, str):
        normalize = parse_normalize(normalize)
    adapter = StateAdapter(tuple(strip_prefix), key_map, normalize)
    return prepare(resolved_task, _checkpoint(model), arch_name, data_root, gold_seeds, TensorCache(cache_dir),
                   resolve_device(device), progress=progress, retain_sample_size=retain_sample, adapter=adapter,
                   executor=make_executor(executor) if isinstance(executor, str) else executor)


@contextmanager
def _executor(executor: Any) -> Iterator[Any]:
    """``executor`` as an object; one made here from its name is closed when the call is done (a process pool's
    workers stop), one given as an object is the caller's to close."""
    if not isinstance(executor, str):
        yield executor
        return
    from muaudit.engine import make_executor

    made = make_executor(executor)
    try:
        yield made
    finally:
        close = getattr(made, "close", None)
        if close is not None:
            close()


# --------------------------------------------------------------------------------------------- inputs
def _task_and_arch(task: Any, arch: Any, trains_original: bool) -> tuple[Any, str | None]:
    from muaudit.factories import factory_arch
    from muaudit.task import ModelSpec, Task, resolve_task

    resolved = task if isinstance(task, Task) else resolve_task(str(task))
    if arch is None:
        return resolved, None
    name = factory_arch(arch) if callable(arch) or ":" in str(arch) else str(arch)
    if trains_original:  # no checkpoint: the original and gold models are built with this architecture
        return replace(resolved, model=ModelSpec(name, resolved.model.options, resolved.model.normalize)), None
    return resolved, name


def _checkpoint(model: Any) -> Any:
    """``model`` as what :func:`muaudit.models.prepare` takes: ``None``, a path or an in-memory checkpoint."""
    import torch
    from torch import nn

    from muaudit.checkpoint import Checkpoint, state_dict_sha256

    if model is None or isinstance(model, (str, Path)):
        return model
    if isinstance(model, nn.Module):
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        label = f"<{type(model).__name__} module>"
    elif isinstance(model, Mapping) and all(isinstance(v, torch.Tensor) for v in model.values()):
        state = {str(k): v.detach().cpu().clone() for k, v in model.items()}
        label = "<state dict>"
    else:
        from muaudit.errors import CheckpointError

        raise CheckpointError(f"model must be None, a checkpoint path, a state dict or an nn.Module, got "
                              f"{type(model).__name__}")
    return Checkpoint(state, None, state_dict_sha256(state), label)


def method_plugin(method: MethodLike, params: Mapping[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """A method as ``(LoadedPlugin, params)``: a registered name, a subclass or an instance (module docstring)."""
    from muaudit.base import UnlearningMethod
    from muaudit.plugins import METHODS, load_by_name

    params = dict(params or {})
    if isinstance(method, str):
        plugin = load_by_name(METHODS, method)
        given: dict[str, Any] = {}
    elif isinstance(method, UnlearningMethod):
        plugin, given = local_plugin(type(method), METHODS), dict(getattr(method, "_given", {}))
    else:
        plugin, given = local_plugin(method, METHODS), {}
    return plugin, _validated(plugin, {**given, **params})


def attack_plugins(attacks: Any) -> list[tuple[Any, dict[str, Any]]]:
    """Attacks as ``[(LoadedPlugin, params)]``: a comma-separated string, or a list of names, classes, instances
    or ``(attack, params)`` pairs."""
    from muaudit.base import MembershipAttack
    from muaudit.errors import ParameterError
    from muaudit.plugins import ATTACKS, load_by_name

    items = [a.strip() for a in attacks.split(",") if a.strip()] if isinstance(attacks, str) else list(attacks)
    if not items:
        raise ParameterError("at least one membership attack is needed")
    out = []
    for item in items:
        attack, params = item if isinstance(item, tuple) else (item, {})
        if isinstance(attack, str):
            plugin = load_by_name(ATTACKS, attack)
        elif isinstance(attack, MembershipAttack):
            plugin, params = local_plugin(type(attack), ATTACKS), {**attack.hparams.as_dict(), **dict(params)}
        else:
            plugin = local_plugin(attack, ATTACKS)
        out.append((plugin, _validated(plugin, dict(params))))
    return out


def _validated(plugin: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Unknown names and out-of-range values fail here, before any training (the user's error); anything else the
    plugin's constructor raises is the plugin's failure."""
    from muaudit.errors import ParameterError
    from muaudit.seal import plugin_call

    with plugin_call(plugin.spec.describe(), "__init__", passthrough=(ParameterError,)):
        plugin.cls(**params)
    return params


def local_plugin(cls: Any, group: str) -> Any:
    """A class that is not installed as an entry point, as a validated plugin of distribution ``local``."""
    from importlib.metadata import EntryPoint

    from muaudit.errors import PluginValidationError
    from muaudit.plugins import LoadedPlugin, PluginSpec, validate_plugin

    if not inspect.isclass(cls):
        raise PluginValidationError(f"expected a registered name, a plugin class or an instance, got "
                                    f"{type(cls).__name__}")
    name = getattr(cls, "name", "") or cls.__name__
    target = f"{cls.__module__}:{cls.__qualname__}"
    spec = PluginSpec(name, group, LOCAL_DISTRIBUTION, f"source-{_source_digest(cls)[:12]}",
                      EntryPoint(name, target, group))
    validate_plugin(spec, cls)
    return LoadedPlugin(spec, cls)


def _source_digest(cls: type) -> str:
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # no source (e.g. built at run time): the qualified name and id only
        source = f"{cls.__module__}.{cls.__qualname__}@{id(cls)}"
    return hashlib.sha256(source.encode()).hexdigest()

