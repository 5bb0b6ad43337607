"""``muaudit describe METHOD`` and ``muaudit list methods -v``: every parameter, its range and every preset's value.

Users otherwise meet a method's parameters only in error messages. The table lists, per parameter, its type,
declared default, constraint, tuning range (:class:`~muaudit.params.Search`) and the value each named preset
gives it (``-``: the preset leaves the declared default); with a task profile it also says which preset
``"auto"`` picks for that task and why. Everything comes from the plugin's cached declarations
(:func:`muaudit.plugins.declarations`), so describing a method imports neither torch nor the plugin.
"""
from __future__ import annotations

from typing import Any, Mapping


def _text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def parameter_rows(decl: Mapping[str, Any]) -> list[list[str]]:
    """One row per parameter: name, type, default, constraint, search range, then one column per preset."""
    presets = dict(decl.get("presets") or {})
    rows = []
    for p in decl.get("params", ()):
        constraint = (p["constraint"] or "any").removeprefix("in the range ") + (" or none" if p["nullable"] else "")
        row = [p["name"], p["type"], _text(p["default"]), constraint, p["search"] or "-"]
        row += [_text(values[p["name"]]) if p["name"] in values else "-" for values in presets.values()]
        rows.append(row)
    return rows


def describe_method(name: str, dist: str, version: str, decl: Mapping[str, Any], auto_reason: str | None = None
                    ) -> str:
    """The whole description of a method from its declarations, as aligned plain text."""
    needs = ", ".join(decl.get("needs") or ()) or "the forget set only"
    lines = [f"{name} ({dist} {version}): {decl['summary']}", f"paper: {decl['paper']}", f"needs: {needs}"]
    presets = list(decl.get("presets") or {})
    header = ["parameter", "type", "default", "range", "tuned over", *presets]
    rows = [header] + parameter_rows(decl)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines.append("")
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    if presets:
        lines += ["", "preset 'auto' (the default) picks one of these for the task: see muaudit.presets"]
    if auto_reason is not None:
        lines.append(f"on this task: {auto_reason}")
    return "\n".join(lines)
