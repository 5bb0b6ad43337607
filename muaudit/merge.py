"""Merging: scorecards produced on different machines (or in different runs) combined into one comparison.

``muaudit merge DIR...`` reads each path's ``scorecard.json`` or ``comparison.json`` (a directory holding one, or
the file itself) and returns one :class:`~muaudit.comparison.Comparison`. Scorecards are combined only when they
are measurements of the same experiment against the same reference, so the merge refuses, naming the difference
and the two sources, when any of these differ:

- the scorecard schema version;
- the task (its content hash: data, forget set, architecture, recipe, seed);
- the original model (its state hash) and the gold set (every gold model's state hash, in order);
- the readouts (names, in order: the same attacks with the same settings produce the same rows).

Scorecards of the same method are kept apart only if they differ (other parameters or seeds); an identical
scorecard given twice is refused, since it would be counted twice.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from muaudit.comparison import Comparison, MethodFailure
from muaudit.errors import MuauditError
from muaudit.results import Scorecard


class MergeError(MuauditError):
    """Scorecards that cannot be combined (exit 2), or a path that holds none."""


@dataclass(frozen=True)
class Source:
    """Scorecards read from one path, and that path (for error messages)."""

    path: str
    scorecards: tuple[Scorecard, ...]
    failures: tuple[MethodFailure, ...] = ()


def read_source(path: str | Path) -> Source:
    """The scorecards of ``path``: a ``scorecard.json``/``comparison.json`` or a directory holding one."""
    target = Path(path)
    if target.is_dir():
        found = [target / n for n in ("comparison.json", "scorecard.json") if (target / n).is_file()]
        if not found:
            raise MergeError(f"{path}: holds neither scorecard.json nor comparison.json")
        target = found[0]
    try:
        raw = json.loads(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MergeError(f"{path}: no such file or directory") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise MergeError(f"{target}: cannot be read as JSON: {exc}") from None
    try:
        if isinstance(raw, list) or (isinstance(raw, dict) and "scorecards" in raw):
            comparison = Comparison.from_dict(raw)
            return Source(str(target), comparison.scorecards, comparison.failures)
        return Source(str(target), (Scorecard.from_dict(raw),))
    except (KeyError, TypeError, ValueError) as exc:
        raise MergeError(f"{target}: not a muaudit scorecard or comparison ({type(exc).__name__}: {exc})") from None


def merge(sources: Sequence[Source]) -> Comparison:
    """One comparison of every scorecard of ``sources`` (module docstring: what must agree)."""
    pairs = [(s.path, card) for s in sources for card in s.scorecards]
    if not pairs:
        raise MergeError("nothing to merge: no scorecard in the given paths")
    first_path, first = pairs[0]
    seen: dict[str, str] = {}
    for path, card in pairs:
        difference = _difference(first, card)
        if difference is not None:
            raise MergeError(f"cannot merge {path} with {first_path}: {difference}")
        key = json.dumps(_identity(card), sort_keys=True)
        if key in seen:
            raise MergeError(f"{path} repeats the scorecard of {card.method['name']!r} already read from "
                             f"{seen[key]}")
        seen[key] = path
    failures = tuple(f for s in sources for f in s.failures)
    gold_models = len(first.provenance.get("gold_state_sha256") or first.provenance["seeds"]["gold"])
    return Comparison(first.task["name"], first.task["hash"], gold_models, tuple(c for _, c in pairs), failures)


def _difference(a: Scorecard, b: Scorecard) -> str | None:
    """The first way in which ``b`` is not the same experiment as ``a``, or ``None``."""
    checks: list[tuple[str, Any, Any]] = [
        ("schema version", a.schema_version, b.schema_version),
        ("task (content hash)", a.task.get("hash"), b.task.get("hash")),
        ("original model (state hash)", _original(a), _original(b)),
        ("gold models (state hashes)", a.provenance.get("gold_state_sha256"), b.provenance.get("gold_state_sha256")),
        ("readouts (attacks or their settings)", [r.name for r in a.readouts], [r.name for r in b.readouts]),
    ]
    for what, left, right in checks:
        if left != right:
            return f"different {what}: {_short(right)} vs {_short(left)}"
    return None


def _original(card: Scorecard) -> Any:
    original = card.provenance.get("original") or {}
    return original.get("state_sha256", original.get("sha256"))


def _identity(card: Scorecard) -> dict[str, Any]:
    return {"method": card.method.get("name"), "params": card.method.get("params"),
            "seed": card.provenance.get("seeds", {}).get("method"),
            "unlearned": card.provenance.get("unlearned_state_sha256")}


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
