"""Frozen result objects: the scorecard, its JSON schema, and its table renderings.

JSON schema (``schema_version`` "1.4"): ``{"schema_version", "method", "task", "readouts": [Readout...],
"attacks": [AttackReport...], "verdicts": [Verdict...], "verdict_summary", "signal", "challenge",
"entropy_histograms", "provenance", "timings"}``. Version 1.1 added the attacks' intervals, ROC points and per-gold
metrics and the Streisand verdicts; 1.2 the ``signal`` section (:mod:`muaudit.signal`: can the task show
forgetting, is the original consistent with it), the ``undetermined`` verdict, the ``forget_loss`` check, each
verdict's gold values, and the method's ``preset`` and ``tuning`` records; 1.3 the method's ``diagnostics`` (what
the method reported about its run: iterations, stop reason, selected-example counts; JSON values keyed by name);
1.4 the optional ``method_seeds`` section (:mod:`muaudit.seeds`: each readout's mean, standard deviation and
interval over K method seeds, and the verdicts over seeds; ``null`` for a single run). Earlier scorecards still
load. Everything except ``timings`` (wall-clock seconds and the creation time)
is a deterministic function of the inputs and seeds.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from muaudit.serial import json_safe
from muaudit.verdicts import Verdict

if TYPE_CHECKING:
    from muaudit.arrays import AuditArrays

SCHEMA_VERSION = "1.4"
#: The columns of :meth:`Scorecard.to_pandas` (and of ``Comparison.to_pandas``, which adds failures).
FRAME_COLUMNS = ("method", "section", "name", "unit", "unlearned", "original", "gold", "gap", "gold_spread_max",
                 "interval_low", "interval_high", "band_low", "band_high", "verdict", "higher_is_better")
READABLE_SCHEMAS = ("1.0", "1.1", "1.2", "1.3", "1.4")


@dataclass(frozen=True)
class Readout:
    """One readout of the unlearned model beside the original and gold models.

    ``kind`` is ``"model"`` for a property of one model (e.g. forget error): ``gap`` = unlearned - gold and
    ``gold_spread`` holds ``|gold_j - gold_0|`` for the extra gold seeds. It is ``"distance"`` for a comparison
    with the gold model (e.g. activation distance): ``gold`` is ``None`` and ``gold_spread`` holds the same distance
    from gold_j to gold_0 (the noise floor).
    """

    name: str
    kind: str
    unit: str
    higher_is_better: bool | None
    description: str
    unlearned: float | None
    original: float | None
    gold: float | None = None
    gap: float | None = None
    gold_spread: tuple[float, ...] = ()
    interval: tuple[float, float] | None = None  # the unlearned value's sampling interval, where one is given

    @property
    def spread_max(self) -> float | None:
        return max(self.gold_spread) if self.gold_spread else None

    @property
    def deviation(self) -> float | None:
        """What is compared with the gold spread: ``|gap|`` for model readouts, the value for distances."""
        if self.kind == "model":
            return None if self.gap is None else abs(self.gap)
        return self.unlearned


@dataclass(frozen=True)
class AttackReport:
    """An attack's settings and metrics on the unlearned, original and gold models.

    ``gold`` holds the reference gold model's metrics and ``golds`` every gold model's; each metrics dict carries
    its confidence ``intervals``. ``roc`` holds at most a few hundred (FPR, TPR) points per model (log-spaced in
    FPR, for linear and log-log plots).
    """

    name: str
    distribution: str
    version: str
    settings: dict[str, Any]
    unlearned: dict[str, Any]
    original: dict[str, Any]
    gold: dict[str, Any]
    golds: list[dict[str, Any]] = field(default_factory=list)
    roc: dict[str, Any] = field(default_factory=dict)
    needs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Scorecard:
    """The result of auditing one method on one task."""

    method: dict[str, Any]
    task: dict[str, Any]
    readouts: tuple[Readout, ...]
    attacks: tuple[AttackReport, ...]
    entropy_histograms: dict[str, Any]
    provenance: dict[str, Any]
    timings: dict[str, Any]
    verdicts: tuple[Verdict, ...] = ()
    verdict_summary: str | None = None
    challenge: dict[str, Any] | None = None
    signal: dict[str, Any] | None = None
    schema_version: str = SCHEMA_VERSION
    #: Statistics over K method seeds (:mod:`muaudit.seeds`), or ``None`` for a single run.
    method_seeds: dict[str, Any] | None = None
    #: The audit's per-example arrays (:mod:`muaudit.arrays`; ``arrays.npz`` beside the JSON, never in it).
    arrays: "AuditArrays | None" = field(default=None, compare=False, repr=False)

    @property
    def diagnostics(self) -> dict[str, Any]:
        """What the method reported about its run (empty for methods that report nothing and before 1.3)."""
        return dict(self.method.get("diagnostics") or {})

    def readout(self, name: str) -> Readout:
        for item in self.readouts:
            if item.name == name:
                return item
        raise KeyError(name)

    def interval(self, name: str) -> tuple[float, float] | None:
        """The unlearned value's 95% sampling interval for readout ``name``, where the audit has one: the readout's
        own, its attack's bootstrap or Clopper-Pearson interval (``mia_<attack>_<metric>``), or the matching
        Streisand check's (forget error from ``forget_accuracy``, mean D_f entropy from ``forget_entropy``)."""
        readout = self.readout(name)
        if readout.interval is not None:
            return tuple(readout.interval)  # type: ignore[return-value]
        for report in self.attacks:
            metric = name.removeprefix(f"mia_{report.name}_") if name.startswith(f"mia_{report.name}_") else None
            found = (report.unlearned.get("intervals") or {}).get(metric) if metric else None
            if found is not None:
                return float(found[0]), float(found[1])
        checks = {v.check: v for v in self.verdicts}
        if name == "forget_error" and "forget_accuracy" in checks:
            low, high = checks["forget_accuracy"].interval
            return 100 * (1 - high), 100 * (1 - low)
        if name == "forget_entropy_mean" and "forget_entropy" in checks:
            return tuple(checks["forget_entropy"].interval)  # type: ignore[return-value]
        return None

    # ------------------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        out = asdict(replace(self, arrays=None))
        out.pop("arrays")
        out["readouts"] = [asdict(r) | {"gold_spread": list(r.gold_spread)} for r in self.readouts]
        out["verdicts"] = [asdict(v) for v in self.verdicts]
        return json_safe(out)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Scorecard":
        if raw.get("schema_version") not in READABLE_SCHEMAS:
            raise ValueError(f"unsupported scorecard schema {raw.get('schema_version')!r}")
        readouts = tuple(Readout(**{**r, "gold_spread": tuple(r["gold_spread"]),
                                    "interval": None if r.get("interval") is None else tuple(r["interval"])})
                         for r in raw["readouts"])
        attacks = tuple(AttackReport(**a) for a in raw["attacks"])
        verdicts = tuple(Verdict(**{**v, "band": tuple(v["band"]), "interval": tuple(v["interval"]),
                                    "golds": tuple(v.get("golds", ()))}) for v in raw.get("verdicts", ()))
        return cls(raw["method"], raw["task"], readouts, attacks, raw["entropy_histograms"],
                   raw["provenance"], raw["timings"], verdicts, raw.get("verdict_summary"), raw.get("challenge"),
                   raw.get("signal"), raw["schema_version"], raw.get("method_seeds"))

    def to_pandas(self) -> Any:
        """A tidy frame (pandas is imported only here): one row per readout (``section="readout"``) with its
        unit, values, gap, gold spread and the unlearned value's interval where one is given, then one row per
        Streisand verdict (``section="verdict"``) with its value, interval, gold band and verdict."""
        import pandas as pd

        return pd.DataFrame(self.rows(), columns=list(FRAME_COLUMNS))

    def rows(self) -> list[dict[str, Any]]:
        """The rows of :meth:`to_pandas` as plain dicts."""
        method = self.method["name"]
        rows = [{"method": method, "section": "readout", "name": r.name, "unit": r.unit, "unlearned": r.unlearned,
                 "original": r.original, "gold": r.gold, "gap": r.gap, "gold_spread_max": r.spread_max,
                 "interval_low": r.interval[0] if r.interval else None,
                 "interval_high": r.interval[1] if r.interval else None, "band_low": None, "band_high": None,
                 "verdict": None, "higher_is_better": r.higher_is_better} for r in self.readouts]
        rows += [{"method": method, "section": "verdict", "name": v.check, "unit": None, "unlearned": v.unlearned,
                  "original": v.original, "gold": v.gold, "gap": v.unlearned - v.gold, "gold_spread_max": None,
                  "interval_low": v.interval[0], "interval_high": v.interval[1], "band_low": v.band[0],
                  "band_high": v.band[1], "verdict": v.verdict, "higher_is_better": None} for v in self.verdicts]
        return rows

    # ---------------------------------------------------------------------------------- rendering
    def to_text(self) -> str:
        """The scorecard as an aligned plain-text table."""
        header = ["readout", "unlearned", "original", "gold", "gap", "gold-vs-gold (max)"]
        rows = [header] + [_row(r) for r in self.readouts]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [self._title(), ""]
        for i, row in enumerate(rows):
            lines.append("  ".join(cell.ljust(widths[0]) if j == 0 else cell.rjust(widths[j])
                                   for j, cell in enumerate(row)).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines += ["", self._timing_line()] + [f"note: {n}" for a in self.attacks for n in a.unlearned["notes"]]
        if self.diagnostics:
            lines += ["", "method diagnostics:"] + [f"  {k}: {_fmt_value(v)}" for k, v in self.diagnostics.items()]
        lines += self._signal_lines()
        lines += self._seed_lines()
        if self.verdicts:
            lines += ["", f"Streisand checks: {self.verdict_summary}"]
            lines += [f"  {v.check}: {v.verdict}: {v.evidence}" for v in self.verdicts]
        return "\n".join(lines)

    def _seed_lines(self) -> list[str]:
        """Readouts and verdicts over method seeds (``--method-seeds``), when present."""
        section = self.method_seeds
        if not section:
            return []
        level = f"{section['level']:.0%}"
        lines = ["", f"over {section['count']} method seeds (mean, sd, {level} interval of the mean):"]
        lines += [f"  {r['name']}: {_fmt(r['mean'])} (sd {_fmt(r['std'])}, {_fmt(r['interval'][0])}.."
                  f"{_fmt(r['interval'][1])})" for r in section["readouts"]]
        lines += [f"verdicts over method seeds: {section['verdict_summary']} ({section['rule']})"]
        lines += [f"  {v['check']}: {v['verdict']}: mean {_fmt(v['mean'])} ({level} interval {_fmt(v['interval'][0])}"
                  f"..{_fmt(v['interval'][1])}) vs gold band {_fmt(v['band'][0])}..{_fmt(v['band'][1])}"
                  for v in section["verdicts"]]
        return lines

    def _signal_lines(self) -> list[str]:
        """The signal line, the per-check signal and any consistency warning."""
        if not self.signal:
            return []
        lines = ["", self.signal["line"]]
        for c in self.signal["checks"]:
            ratio = "-" if c["snr"] is None else f"{c['snr']:.1f}x"
            lines.append(f"  {c['check']}: original {_fmt(c['original'])} vs gold {_fmt(min(c['golds']))}.."
                         f"{_fmt(max(c['golds']))} (gap/spread {ratio}): "
                         f"{'signal' if c['detectable'] else 'no signal'}")
        lines += [f"WARNING: {w}" for w in self.signal["warnings"]]
        return lines

    def to_markdown(self) -> str:
        """The scorecard as Markdown: readouts with units and 95% intervals, the signal, the verdicts with their
        intervals and gold bands, and the provenance as a short list."""
        header = ["readout", "unit", "unlearned [95% interval]", "original", "gold", "gap", "gold-vs-gold (max)"]
        lines = [f"# {self._title()}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join([r.name, r.unit, format_interval(r.unlearned, self.interval(r.name)),
                                     *_row(r)[2:]]) + " |" for r in self.readouts]
        lines += ["", self._timing_line()]
        if self.diagnostics:
            lines += ["", "## Method diagnostics", "", "| diagnostic | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt_value(v)} |" for k, v in self.diagnostics.items()]
        if self.signal:
            lines += ["", "## Signal", "", self.signal["line"], "", "| check | original | gold models | gap ÷ spread | "
                      "signal |", "|---|---|---|---|---|"]
            lines += [f"| {c['check']} | {_fmt(c['original'])} | {_fmt(min(c['golds']))}..{_fmt(max(c['golds']))} | "
                      f"{'-' if c['snr'] is None else format(c['snr'], '.1f')} | "
                      f"{'yes' if c['detectable'] else 'no'} |" for c in self.signal["checks"]]
            lines += [f"\n**Warning:** {w}" for w in self.signal["warnings"]]
        if self.verdicts:
            lines += ["", f"## Streisand checks: {self.verdict_summary}", "",
                      "| check | verdict | unlearned [95% interval] | gold band | original | evidence |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {v.check} | {v.verdict} | {format_interval(v.unlearned, v.interval)} | "
                      f"[{_fmt(v.band[0])}, {_fmt(v.band[1])}] | {_fmt(v.original)} | {v.evidence} |"
                      for v in self.verdicts]
        lines += ["", "## Readout definitions", ""]
        lines += [f"- `{r.name}` ({r.unit}): {r.description}" for r in self.readouts]
        if self.method_seeds:
            lines += ["", "## Over method seeds", "", "```", *self._seed_lines()[1:], "```"]
        lines += ["", "## Provenance", ""] + [f"- {line}" for line in provenance_items(self.provenance)]
        return "\n".join(lines) + "\n"

    def _title(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in sorted(self.method["params"].items()))
        return (f"muaudit scorecard: method {self.method['name']}({params}) on task {self.task['name']} "
                f"[{self.task['hash'][:12]}], {self.provenance['gold_models']} gold model(s)")

    def _timing_line(self) -> str:
        t = self.timings
        line = (f"time: method {t['method_seconds']:.3f} s, gold retrain {t['gold_seconds']:.3f} s "
                f"(speed-up {t['speedup_vs_gold']:.1f}x)")
        phases = t.get("phases") or {}
        if phases:
            line += "; phases: " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items() if v >= 0.005)
        return line


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.4f}"


def format_interval(value: float | None, interval: Sequence[float] | None) -> str:
    """``value [low, high]`` (the value alone when there is no interval)."""
    if interval is None or value is None:
        return _fmt(value)
    return f"{_fmt(value)} [{_fmt(interval[0])}, {_fmt(interval[1])}]"


def provenance_items(provenance: Mapping[str, Any]) -> list[str]:
    """The provenance as a few short lines: versions, device, plugins, seeds, original and model checksums."""
    lines = []
    versions = provenance.get("versions") or {}
    if versions:
        lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    if "device" in provenance:
        lines.append(f"device: {provenance['device']}")
    plugins = [provenance.get("method_plugin"), *(provenance.get("attack_plugins") or [])]
    named = [p for p in plugins if isinstance(p, Mapping)]
    if named:
        lines.append("plugins: " + ", ".join(_plugin_line(p) for p in named))
    seeds = provenance.get("seeds") or {}
    if seeds:
        lines.append("seeds: " + ", ".join(f"{k} {v}" for k, v in seeds.items()))
    original = provenance.get("original") or {}
    if original:
        lines.append("original: " + ", ".join(f"{k} {str(v)[:16] if 'sha256' in k else v}"
                                              for k, v in sorted(original.items()) if not isinstance(v, (dict, list))))
    golds = provenance.get("gold_state_sha256") or []
    if golds:
        lines.append(f"{len(golds)} gold model(s), state SHA-256 " + ", ".join(str(g)[:12] for g in golds))
    if provenance.get("unlearned_state_sha256"):
        lines.append(f"unlearned model state SHA-256 {str(provenance['unlearned_state_sha256'])[:12]}")
    return lines


def _plugin_line(plugin: Mapping[str, Any]) -> str:
    name = plugin.get("name", "?")
    dist = plugin.get("distribution") or plugin.get("dist") or ""
    version = plugin.get("version") or ""
    return f"{name} ({dist} {version})".replace(" ()", "").replace("( ", "(").replace(" )", ")")


def _fmt_value(value: Any) -> str:
    """A diagnostic value: numbers as in the tables, lists element-wise, everything else as text."""
    if isinstance(value, list):
        return "[" + ", ".join(_fmt_value(v) for v in value) + "]"
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    return _fmt(float(value))


def _row(r: Readout) -> list[str]:
    return [r.name, _fmt(r.unlearned), _fmt(r.original), _fmt(r.gold), _fmt(r.gap), _fmt(r.spread_max)]


def comparison_table(cards: Sequence[Scorecard]) -> str:
    """A Markdown table with one row per readout (with its unit) and one column per method (each value with its
    95% interval where the audit has one), plus gold and spread."""
    names = [c.method["name"] for c in cards]
    header = ["readout", *names, "gold", "gold-vs-gold (max)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, first in enumerate(cards[0].readouts):  # the unit with the name, each method's value with its interval
        values = [format_interval(c.readouts[i].unlearned, c.interval(c.readouts[i].name)) for c in cards]
        lines.append("| " + " | ".join([f"{first.name} ({first.unit})", *values, _fmt(first.gold),
                                        _fmt(first.spread_max)]) + " |")
    times = [f"{c.timings['method_seconds']:.3f}" for c in cards]
    ratios = [f"{c.timings['method_seconds'] / c.timings['gold_seconds']:.4f}" for c in cards]
    lines.append("| method_seconds | " + " | ".join(times) + f" | {cards[0].timings['gold_seconds']:.3f} | - |")
    lines.append("| time ÷ gold retrain | " + " | ".join(ratios) + " | 1 | - |")
    phases = [p for p in dict.fromkeys(k for c in cards for k in c.timings.get("phases", {})) if p != "method"]
    for phase in phases:  # seconds per phase; data_load, original and golds are the shared set-up's, in every column
        cells = [f"{c.timings.get('phases', {}).get(phase, 0.0):.3f}" for c in cards]
        lines.append(f"| time: {phase} (s) | " + " | ".join(cells) + " | - | - |")
    for key in dict.fromkeys(k for c in cards for k in c.diagnostics):  # what each method reported ("-": nothing)
        cells = [_fmt_value(c.diagnostics[key]) if key in c.diagnostics else "-" for c in cards]
        lines.append(f"| diagnostic: {key} | " + " | ".join(cells) + " | - | - |")
    if all(c.verdicts for c in cards):
        lines.append("| **Streisand summary** | " + " | ".join(str(c.verdict_summary) for c in cards) + " | - | - |")
        for i, first in enumerate(cards[0].verdicts):
            if all(len(c.verdicts) > i and c.verdicts[i].check == first.check for c in cards):
                lines.append(f"| verdict {first.check} | " + " | ".join(c.verdicts[i].verdict for c in cards)
                             + " | - | - |")
    return "\n".join(lines) + "\n"
