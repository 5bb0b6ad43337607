"""Reports of an audit: plots (:mod:`muaudit.report.plots`, also ``muaudit.plot``) and the self-contained HTML
report (:mod:`muaudit.report.html`). matplotlib is imported only when a plot or a report is made.

``render(path)`` writes ``report.html`` beside an existing ``scorecard.json`` or ``comparison.json`` (reading
``arrays.npz`` there when present).
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {"render": "muaudit.report.html", "scorecard_html": "muaudit.report.html",
            "comparison_html": "muaudit.report.html", "report_files": "muaudit.report.html"}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'muaudit.report' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
