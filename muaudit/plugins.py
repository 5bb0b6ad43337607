"""Plugin discovery through ``importlib.metadata`` entry points, in two phases.

:func:`discover` lists :class:`PluginSpec` records (name, group, distribution, version) without importing
anything; :func:`load` imports one, checks that it honours the contract and returns a :class:`LoadedPlugin`.
Built-in plugins are found exactly like third-party ones: the core never imports them by name.

Names: a plugin is addressed by its entry-point name (``pgu``) or, when two distributions provide the same name,
by a qualified name ``distribution:name`` (``muaudit-pgu-fork:pgu``). Duplicates are never resolved silently.
Setting ``MUAUDIT_DISABLE_PLUGIN_AUTOLOAD=1`` restricts discovery to the ``muaudit`` distribution's built-ins.
"""
from __future__ import annotations

import difflib
import inspect
import os
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from muaudit.errors import (
    DuplicatePluginError,
    PluginLoadError,
    PluginValidationError,
    UnknownPluginError,
)

METHODS = "muaudit.methods"
ATTACKS = "muaudit.attacks"
_KIND = {METHODS: "method", ATTACKS: "attack"}


@dataclass(frozen=True)
class PluginSpec:
    """A discovered, not yet imported, plugin."""

    name: str
    group: str
    dist: str
    version: str
    entry_point: EntryPoint

    @property
    def qualified_name(self) -> str:
        return f"{self.dist}:{self.name}"

    @property
    def kind(self) -> str:
        return _KIND.get(self.group, self.group)

    def describe(self) -> str:
        return f'{self.kind} "{self.name}" from {self.dist} {self.version}'


@dataclass(frozen=True)
class LoadedPlugin:
    """An imported and validated plugin class with its provenance."""

    spec: PluginSpec
    cls: type

    def provenance(self) -> dict[str, str]:
        return {"name": self.spec.name, "distribution": self.spec.dist, "version": self.spec.version,
                "entry_point": self.spec.entry_point.value}


def discover(group: str) -> list[PluginSpec]:
    """All entry points of ``group``, sorted by (name, distribution); nothing is imported."""
    only_builtins = os.environ.get("MUAUDIT_DISABLE_PLUGIN_AUTOLOAD", "") not in ("", "0")
    specs = []
    for ep in entry_points(group=group):
        dist = ep.dist.metadata["Name"] if ep.dist is not None else "unknown"
        if only_builtins and dist != "muaudit":
            continue
        version = ep.dist.version if ep.dist is not None else "unknown"
        specs.append(PluginSpec(ep.name, group, dist, version, ep))
    unique = {(s.name, s.dist, s.entry_point.value): s for s in specs}  # the same dist seen twice on sys.path
    return sorted(unique.values(), key=lambda s: (s.name, s.dist))


def resolve(group: str, name: str) -> PluginSpec:
    """Find the plugin called ``name`` (or ``dist:name``); raise on unknown or ambiguous names."""
    specs = discover(group)
    dist, _, short = name.rpartition(":")
    matches = [s for s in specs if s.name == short and (not dist or s.dist == dist)]
    if len(matches) == 1:
        return matches[0]
    kind = _KIND.get(group, group)
    if not matches:
        raise UnknownPluginError(_unknown_message(kind, name, specs))
    listing = " and ".join(f"{s.dist} {s.version}" for s in matches)
    options = ", ".join(s.qualified_name for s in matches)
    raise DuplicatePluginError(f'{kind} "{short}" is provided by both {listing}; use a qualified name: {options}')


def _unknown_message(kind: str, name: str, specs: list[PluginSpec]) -> str:
    names = sorted({s.name for s in specs})
    close = difflib.get_close_matches(name.rpartition(":")[2], names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    available = ", ".join(names) if names else "none installed"
    return f'unknown {kind} "{name}"{hint} (available: {available})'


def load(spec: PluginSpec) -> LoadedPlugin:
    """Import ``spec`` and validate it against its group's contract."""
    try:
        obj = spec.entry_point.load()
    except (Exception, SystemExit) as exc:  # any failure inside third-party import code is that plugin's fault
        raise PluginLoadError(f"muaudit failed to load {spec.describe()}: {type(exc).__name__}: "
                              f"{_first_line(exc)}") from None
    validate_plugin(spec, obj)
    return LoadedPlugin(spec, obj)


def load_by_name(group: str, name: str) -> LoadedPlugin:
    return load(resolve(group, name))


def validate_plugin(spec: PluginSpec, obj: Any) -> None:
    """Check the class, its declarations and its parameter defaults; raise :class:`PluginValidationError`."""
    from muaudit.base import DATA_NEEDS, MembershipAttack, UnlearningMethod

    base = UnlearningMethod if spec.group == METHODS else MembershipAttack
    where = f"{spec.describe()} ({spec.entry_point.value})"
    if not (inspect.isclass(obj) and issubclass(obj, base)):
        raise PluginValidationError(f"{where} is not a subclass of muaudit.{base.__name__}")
    if inspect.isabstract(obj):
        raise PluginValidationError(f"{where} does not implement {sorted(obj.__abstractmethods__)[0]}")
    for attr in ("summary", "paper"):
        if not isinstance(getattr(obj, attr, None), str) or not getattr(obj, attr):
            raise PluginValidationError(f"{where} must declare a non-empty string {attr!r}")
    if base is UnlearningMethod:
        unknown = set(obj.needs) - set(DATA_NEEDS)
        if unknown:
            raise PluginValidationError(f"{where} declares unknown data needs {sorted(unknown)} "
                                        f"(known: {', '.join(DATA_NEEDS)})")
    try:
        obj()
    except (Exception, SystemExit) as exc:
        raise PluginValidationError(f"{where} cannot be built with its default parameters: {type(exc).__name__}: "
                                    f"{_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


# ------------------------------------------------------------------------------------------ declarations
DECLARATIONS_SCHEMA = 1


def declarations(spec: PluginSpec, cache_dir: str | None = None) -> dict[str, Any]:
    """A plugin's declarations (summary, paper, needs, parameters, presets) as plain JSON values.

    ``muaudit list`` and ``muaudit describe`` need only these, and importing a plugin imports torch (seconds),
    so they are cached under the model cache (``plugins/``), keyed by the plugin's distribution, version and entry
    point and by the size and modification time of every ``.py`` file of the plugin's top-level package and of
    the core modules declarations depend on; anything else is a miss and the plugin is loaded (and validated).
    """
    import hashlib
    import json

    from muaudit.defaults import default_cache_dir

    key = hashlib.sha256(json.dumps(_declaration_key(spec), sort_keys=True).encode()).hexdigest()
    path = (Path(cache_dir) if cache_dir else default_cache_dir()) / "plugins" / f"{key}.json"
    try:
        stored = json.loads(path.read_text())
        if stored.get("schema") == DECLARATIONS_SCHEMA and stored.get("key") == key:
            return stored["declarations"]
    except (OSError, ValueError, AttributeError):
        pass
    found = declarations_of(load(spec).cls)
    _write_json(path, {"schema": DECLARATIONS_SCHEMA, "key": key, "declarations": found})
    return found


def declarations_of(cls: type) -> dict[str, Any]:
    """The JSON form of a plugin class's declarations."""
    from muaudit.serial import json_safe

    def value(v: Any) -> Any:
        return v if isinstance(v, (bool, int, float, str, type(None))) else str(v)

    params = [{"name": p.name, "type": p.type.__name__, "default": value(p.default), "help": p.help,
               "constraint": None if p.constraint is None else str(p.constraint), "nullable": p.nullable,
               "search": None if p.search is None else str(p.search)} for p in getattr(cls, "params", ())]
    presets = {name: {k: value(v) for k, v in values.items()}
               for name, values in dict(getattr(cls, "presets", {}) or {}).items()}
    return json_safe({"summary": cls.summary, "paper": cls.paper, "needs": sorted(getattr(cls, "needs", ())),
                      "params": params, "presets": presets})


def plugin_fingerprint(spec: PluginSpec) -> str:
    """SHA-256 of a plugin's identity: distribution, version, entry point and the stamps of its files (so a cached
    result of an edited plugin is not reused)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(_declaration_key(spec), sort_keys=True).encode()).hexdigest()


def _declaration_key(spec: PluginSpec) -> dict[str, Any]:
    import importlib.util

    from muaudit import __version__

    module = spec.entry_point.value.partition(":")[0]
    files: list[Path] = [Path(__file__).with_name(n) for n in ("base.py", "params.py", "presets.py")]
    try:
        origin = importlib.util.find_spec(module.partition(".")[0])
    except (ImportError, ValueError):
        origin = None
    if origin is not None and origin.origin:
        top = Path(origin.origin)
        files += sorted(top.parent.glob("*.py")) if top.name == "__init__.py" else [top]
    stats = [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
    return {"muaudit": __version__, "dist": spec.dist, "version": spec.version, "entry_point": spec.entry_point.value,
            "group": spec.group, "files": stats}


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    from muaudit.files import write_json_best_effort

    write_json_best_effort(path, payload)
