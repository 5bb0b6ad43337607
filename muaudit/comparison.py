"""Several methods on one set-up, each isolated: one method's failure never loses the others' results.

:func:`compare_methods` audits the methods one after the other on the same task, original and gold models. A
method that fails (its plugin raises or calls ``sys.exit``, returns a NaN model, modifies its inputs, or an attack
fails on its model) is recorded as a :class:`MethodFailure` with a one-line reason, and the next method runs. An
interrupt (Ctrl-C) stops the comparison: the interrupted method and those not yet run are recorded as such, and
the scorecards computed so far are kept. Plugins only ever receive private copies of the audit's data
(:mod:`muaudit.seal`), so a failed method cannot have corrupted the set-up the others use.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

from muaudit.errors import MuauditError
from muaudit.plugins import LoadedPlugin
from muaudit.results import Scorecard, comparison_table, provenance_items

#: Kinds of failure: a plugin's fault, another muaudit error, an unexpected (internal) error, an interrupt, and the
#: methods an interrupt kept from running. ``muaudit compare`` exits 3 after writing when any method failed (130
#: when interrupted).
FAILURE_KINDS = ("plugin", "error", "internal", "interrupted", "not run")
COMPARISON_SCHEMA = 1


@dataclass(frozen=True)
class MethodFailure:
    """A method of a comparison that produced no scorecard, and why (one line)."""

    method: str
    distribution: str
    version: str
    kind: str
    reason: str


@dataclass(frozen=True)
class Comparison:
    """The scorecards of the methods that ran and the failures of those that did not, in the order given."""

    task: str
    task_hash: str
    gold_models: int
    scorecards: tuple[Scorecard, ...]
    failures: tuple[MethodFailure, ...]

    @property
    def interrupted(self) -> bool:
        return any(f.kind == "interrupted" for f in self.failures)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": COMPARISON_SCHEMA, "task": self.task, "task_hash": self.task_hash,
                "gold_models": self.gold_models, "scorecards": [c.to_dict() for c in self.scorecards],
                "failures": [asdict(f) for f in self.failures]}

    def to_pandas(self) -> Any:
        """Every scorecard's rows (:meth:`~muaudit.results.Scorecard.to_pandas`: readouts with intervals, verdicts
        with bands) and one ``section="failure"`` row per failed method, its reason in ``verdict``."""
        import pandas as pd

        from muaudit.results import FRAME_COLUMNS

        rows = [row for card in self.scorecards for row in card.rows()]
        rows += [{"method": f.method, "section": "failure", "name": f.kind, "verdict": f.reason} for f in self.failures]
        return pd.DataFrame(rows, columns=list(FRAME_COLUMNS))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | list[dict[str, Any]]) -> "Comparison":
        """Rebuild from :meth:`to_dict` (e.g. a ``comparison.json``); the list of scorecards that ``compare``
        wrote before failures were recorded is read too (no failures)."""
        if isinstance(raw, list):
            cards = tuple(Scorecard.from_dict(c) for c in raw)
            if not cards:
                raise ValueError("an empty comparison")
            return cls(cards[0].task["name"], cards[0].task["hash"], len(cards[0].provenance["seeds"]["gold"]),
                       cards, ())
        if raw.get("schema") != COMPARISON_SCHEMA:
            raise ValueError(f"unsupported comparison schema {raw.get('schema')!r}")
        return cls(raw["task"], raw["task_hash"], raw["gold_models"],
                   tuple(Scorecard.from_dict(c) for c in raw["scorecards"]),
                   tuple(MethodFailure(**f) for f in raw["failures"]))

    def to_markdown(self) -> str:
        title = (f"# muaudit comparison on task {self.task} [{self.task_hash[:12]}], {self.gold_models} gold "
                 f"model(s)\n\n")
        body = comparison_table(list(self.scorecards)) if self.scorecards else "No method produced a scorecard.\n"
        if self.failures:
            body += "\n## Failed methods\n\n| method | distribution | failure | reason |\n|---|---|---|---|\n"
            body += "".join(f"| {f.method} | {f.distribution} {f.version} | {f.kind} | {_cell(f.reason)} |\n"
                            for f in self.failures)
        return title + body + _seeds_markdown(self.scorecards) + _provenance_markdown(self.scorecards)


def _seeds_markdown(cards: Sequence[Scorecard]) -> str:
    """Each method's readouts and verdicts over method seeds (``--method-seeds``), when its scorecard has them."""
    parts = [f"\n### {card.method['name']}\n\n```\n" + "\n".join(card._seed_lines()[1:]) + "\n```\n"
             for card in cards if card.method_seeds]
    return "\n## Over method seeds\n" + "".join(parts) if parts else ""


def _provenance_markdown(cards: Sequence[Scorecard]) -> str:
    """The shared provenance (versions, device, original and gold models) once, then each method's own line."""
    if not cards:
        return ""
    shared = {k: v for k, v in cards[0].provenance.items()
              if k not in ("method_plugin", "seeds", "unlearned_state_sha256")}
    lines = [f"- {line}" for line in provenance_items(shared)]
    seeds = cards[0].provenance.get("seeds") or {}
    lines.append(f"- seeds: task {seeds.get('task')}, gold {seeds.get('gold')}, attack {seeds.get('attack')}")
    for card in cards:
        prov = card.provenance
        plugin = prov.get("method_plugin") or {}
        lines.append(f"- {card.method['name']}: {plugin.get('distribution', '')} {plugin.get('version', '')}, seed "
                     f"{card.method.get('seed')}, unlearned state SHA-256 "
                     f"{str(prov.get('unlearned_state_sha256', ''))[:12]}")
    return "\n## Provenance\n\n" + "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def compare_methods(setup: Any, methods: Sequence[tuple[LoadedPlugin, dict[str, Any]]],
                    audit_one: Callable[[LoadedPlugin, dict[str, Any]], Scorecard]) -> Comparison:
    """Audit each method with ``audit_one`` (method run and scorecard), isolating failures (see the module doc)."""
    cards: list[Scorecard] = []
    failures: list[MethodFailure] = []
    for position, (plugin, params) in enumerate(methods):
        try:
            cards.append(audit_one(plugin, params))
        except KeyboardInterrupt:
            failures.append(_failure(plugin, "interrupted", "interrupted by the user while it ran"))
            failures += [_failure(p, "not run", "the comparison was interrupted before it ran")
                         for p, _ in methods[position + 1:]]
            break
        except MuauditError as exc:
            failures.append(_failure(plugin, "plugin" if exc.exit_code == 3 else "error", _one_line(exc)))
        except Exception as exc:  # muaudit's own error while auditing this method: recorded, the others go on
            failures.append(_failure(plugin, "internal", f"{type(exc).__name__}: {_one_line(exc)}"))
    return Comparison(setup.task.name, setup.task.content_hash(), len(setup.golds), tuple(cards), tuple(failures))


def _failure(plugin: LoadedPlugin, kind: str, reason: str) -> MethodFailure:
    spec = plugin.spec
    return MethodFailure(spec.name, spec.dist, spec.version, kind, reason)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
