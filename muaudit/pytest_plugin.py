"""The pytest plugin (``pytest11`` entry point ``muaudit``): audits as fixtures, gates as assertions, approved
scorecards as baselines. Importing it is cheap: torch loads when a test first runs an audit.

Fixtures:

- ``muaudit_audit`` (session): ``muaudit_audit(method, model=None, **kwargs)`` runs :func:`muaudit.api.audit`
  (``task="digits"``, ``attacks=...``, ``gold_seeds=...``, method hyperparameters...) and returns the
  :class:`~muaudit.results.Scorecard`; ``muaudit_audit.compare(methods, **kwargs)`` runs
  :func:`muaudit.api.compare`. Models come from muaudit's model cache (content-addressed); scorecards are cached
  too, in memory and under ``<cache dir>/scorecards/``, keyed by the call's arguments, the plugins' names,
  versions and module sources, the task's definition, the device and muaudit's version (``--muaudit-fresh``
  ignores cached scorecards; the models stay cached).
- ``muaudit_baseline``: ``muaudit_baseline(card)`` compares the scorecard with the approved baseline
  ``<test file dir>/<test file stem>/<test name>.json`` within the noise floor
  (:func:`muaudit.gates.compare_baseline`). A missing baseline is written and the test fails (review and commit
  it); ``--muaudit-regen`` rewrites every baseline (those tests fail too, as pytest-regressions does). A baseline
  of another task, method or schema version is an error, not a comparison.

Assertions: :func:`muaudit.gates.check` (``check(card, "forget_error within gold band", "verdict != mixed")``).

Options: ``--muaudit-cache-dir DIR`` (default: muaudit's cache), ``--muaudit-device auto|cpu|cuda``,
``--muaudit-regen``, ``--muaudit-fresh``.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest

from muaudit import api as _api  # cheap: muaudit.api imports torch only when it runs
from muaudit.gates import baseline_of, compare_baseline

_KEY_VERSION = 1
#: The keyword arguments of :func:`muaudit.api.audit`; the others are the method's hyperparameters.
_AUDIT_OPTIONS = frozenset(inspect.signature(_api.audit).parameters)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("muaudit", "muaudit: unlearning audits as tests")
    group.addoption("--muaudit-cache-dir", default=None, metavar="DIR",
                    help="model and scorecard cache (default: $MUAUDIT_CACHE_DIR or ~/.cache/muaudit)")
    group.addoption("--muaudit-device", default="auto", metavar="DEVICE",
                    help="device of the audits: auto (CUDA when present), cpu or cuda")
    group.addoption("--muaudit-regen", action="store_true", default=False,
                    help="write or rewrite the approved scorecard baselines (those tests fail: review, commit)")
    group.addoption("--muaudit-fresh", action="store_true", default=False,
                    help="ignore cached scorecards and audit again (trained models stay cached)")


def pytest_report_header(config: pytest.Config) -> str:
    cache = config.getoption("muaudit_cache_dir") or "muaudit's default cache"
    return f"muaudit: cache {cache}, device {config.getoption('muaudit_device')}"


class AuditRunner:
    """Runs audits through :mod:`muaudit.api`, caching their scorecards in memory and on disk."""

    def __init__(self, cache_dir: str | None, device: str, fresh: bool) -> None:
        self.cache_dir, self.device, self.fresh = cache_dir, device, fresh
        self._memory: dict[str, Any] = {}

    def __call__(self, method: Any, model: Any = None, **kwargs: Any) -> Any:
        """:func:`muaudit.api.audit` of ``method``: its :class:`~muaudit.results.Scorecard`."""
        from muaudit import api
        from muaudit.results import Scorecard

        key = self._key("audit", [api.method_plugin(method, _method_kwargs(kwargs))], model, kwargs)
        return self._cached(key, Scorecard.from_dict, lambda: api.audit(method, model, **self._run_args(kwargs)))

    def compare(self, methods: Iterable[Any], model: Any = None, **kwargs: Any) -> Any:
        """:func:`muaudit.api.compare` of ``methods``: a :class:`~muaudit.comparison.Comparison`."""
        from muaudit import api
        from muaudit.comparison import Comparison

        methods = list(methods)
        per_method = kwargs.get("params") or {}
        plugins = [api.method_plugin(m) for m in methods]
        plugins = [(p, {**kw, **dict(per_method.get(p.spec.name, {}))}) for p, kw in plugins]
        key = self._key("compare", plugins, model, kwargs)
        return self._cached(key, Comparison.from_dict, lambda: api.compare(methods, model, **self._run_args(kwargs)))

    def _run_args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {"device": self.device, "cache_dir": self.cache_dir, "progress": False, **kwargs}

    def _cached(self, key: str | None, load: Callable[[Any], Any], run: Callable[[], Any]) -> Any:
        if key is not None and key in self._memory and not self.fresh:
            return self._memory[key]
        path = None if key is None else self._root() / "scorecards" / f"{key}.json"
        result = None
        if path is not None and path.is_file() and not self.fresh:
            try:
                result = load(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError):
                result = None  # damaged: audit again
        if result is None:
            result = run()
            if path is not None:
                _write_atomic(path, result.to_json())
        if key is not None:
            self._memory[key] = result
        return result

    def _root(self) -> Path:
        from muaudit.defaults import default_cache_dir

        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()

    def _key(self, kind: str, methods: list[tuple[Any, dict[str, Any]]], model: Any,
             kwargs: dict[str, Any]) -> str | None:
        """The scorecard cache key, or ``None`` when the call cannot be keyed (an in-memory model or object)."""
        from muaudit import __version__, api
        from muaudit.results import SCHEMA_VERSION
        from muaudit.task import Task, resolve_task, spec_digest
        from muaudit.training import resolve_device

        if model is not None and not isinstance(model, (str, Path)):
            return None
        options = {k: v for k, v in kwargs.items() if k not in ("task", "attacks", "params")
                   and k not in _method_kwargs(kwargs)}
        if any(not isinstance(v, (str, int, float, bool, type(None), list, tuple)) for v in options.values()):
            return None
        task = kwargs.get("task", "digits")
        task = task if isinstance(task, Task) else resolve_task(str(task), kwargs.get("data_root"))
        attacks = api.attack_plugins(kwargs.get("attacks", api.DEFAULT_ATTACKS))
        record = {"key": _KEY_VERSION, "muaudit": __version__, "schema": SCHEMA_VERSION, "kind": kind,
                  "methods": [_identity(p, kw) for p, kw in methods],
                  "attacks": [_identity(p, kw) for p, kw in attacks],
                  "task": spec_digest(task), "options": options, "device": resolve_device(self.device).type,
                  "model": None if model is None else _file_digest(Path(model))}
        text = json.dumps(record, sort_keys=True, default=repr)
        return hashlib.sha256(text.encode()).hexdigest()


def _method_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments that are not options of :func:`muaudit.api.audit`: the method's hyperparameters."""
    return {k: v for k, v in kwargs.items() if k not in _AUDIT_OPTIONS}


def _identity(plugin: Any, params: dict[str, Any]) -> dict[str, Any]:
    spec = plugin.spec
    return {"name": spec.name, "dist": spec.dist, "version": spec.version, "params": params,
            "source": _module_digest(plugin.cls)}


def _module_digest(cls: type) -> str | None:
    """SHA-256 of the source file of ``cls``'s module: an edited plugin is audited again."""
    try:
        path = inspect.getsourcefile(cls)
        return None if path is None else _file_digest(Path(path))
    except (OSError, TypeError):
        return None


def _file_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@pytest.fixture(scope="session")
def muaudit_audit(pytestconfig: pytest.Config) -> AuditRunner:
    """Run (or load from the cache) a muaudit audit: ``muaudit_audit("finetune", task="digits", epochs=1)``."""
    return AuditRunner(pytestconfig.getoption("muaudit_cache_dir"), pytestconfig.getoption("muaudit_device"),
                       pytestconfig.getoption("muaudit_fresh"))


def baseline_path(request: pytest.FixtureRequest) -> Path:
    """``<test file dir>/<test file stem>/<test name>.json``."""
    test_file = Path(str(request.node.path))
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name).strip("_")
    return test_file.parent / test_file.stem / f"{name}.json"


@pytest.fixture
def muaudit_baseline(request: pytest.FixtureRequest) -> Callable[[Any], None]:
    """Compare a scorecard with this test's approved baseline, within the noise floor (module docstring)."""
    path = baseline_path(request)
    regen = request.config.getoption("muaudit_regen")

    def compare(card: Any) -> None:
        if not hasattr(card, "readouts"):
            raise TypeError(f"muaudit_baseline takes a Scorecard, got {type(card).__name__} (for a comparison, "
                            f"check each of its scorecards in its own test)")
        if regen or not path.is_file():
            existed = path.is_file()
            _write_atomic(path, json.dumps(baseline_of(card), indent=2, sort_keys=True) + "\n")
            pytest.fail(f"muaudit baseline {'rewritten' if existed else 'written'}: {path}; review and commit it, "
                        f"then run again{' without --muaudit-regen' if regen else ''}", pytrace=False)
        try:
            baseline = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{path}: not a JSON baseline ({exc})") from None
        diffs = compare_baseline(baseline, card, str(path))
        if diffs:
            pytest.fail(f"scorecard of {card.method['name']} differs from the approved baseline {path} beyond the "
                        f"noise floor:\n  " + "\n  ".join(diffs), pytrace=False)

    return compare
