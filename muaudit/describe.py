"""``muaudit describe METHOD`` and ``muaudit list methods -v``: every parameter, its range and every preset's value.

Users otherwise meet a method's parameters only in error messages. The table lists, per parameter, its type,
declared default, constraint, tuning range (:class:`~muaudit.params.Search`) and the value each named preset
gives it (``-``: the preset leaves the declared default); with a task profile it also says which preset
``"auto"`` picks for that task and why.
"""
from __future__ import annotations

from typing import Any

from muaudit.params import Param
from muaudit.presets import TaskProfile


def _text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def parameter_rows(cls: type) -> list[list[str]]:
    """One row per parameter: name, type, default, constraint, search range, then one column per preset."""
    presets = dict(getattr(cls, "presets", {}) or {})
    rows = []
    for p in getattr(cls, "params", ()):
        row = [p.name, p.type.__name__, _text(p.default), _constraint(p), str(p.search) if p.search else "-"]
        row += [_text(values[p.name]) if p.name in values else "-" for values in presets.values()]
        rows.append(row)
    return rows


def _constraint(p: Param) -> str:
    text = str(p.constraint).removeprefix("in the range ") if p.constraint is not None else "any"
    return text + (" or none" if p.nullable else "")


def describe_method(plugin: Any, profile: TaskProfile | None = None) -> str:
    """The whole description of a loaded method plugin, as aligned plain text."""
    cls, spec = plugin.cls, plugin.spec
    needs = ", ".join(sorted(cls.needs)) or "the forget set only"
    lines = [f"{spec.name} ({spec.dist} {spec.version}): {cls.summary}", f"paper: {cls.paper}", f"needs: {needs}"]
    presets = list(getattr(cls, "presets", {}) or {})
    header = ["parameter", "type", "default", "range", "tuned over", *presets]
    rows = [header] + parameter_rows(cls)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines.append("")
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    if presets:
        lines += ["", "preset 'auto' (the default) picks one of these for the task: see muaudit.presets"]
    if profile is not None and presets:
        choice = cls.auto_preset(profile)
        lines.append(f"on this task: {choice.reason}")
    return "\n".join(lines)
