"""The self-contained HTML report of a scorecard or a comparison: plots as inline PNG, tables with units and
intervals, the verdicts, and the provenance in a collapsible section. No script, no external resource: it opens
offline in any browser.

:func:`report_files` gives what ``--out`` adds beside the JSON and Markdown (``report.html``, ``arrays.npz``,
``roc.npz``); :func:`render` writes ``report.html`` for an existing ``scorecard.json`` or ``comparison.json``.
"""
from __future__ import annotations

import base64
import io
import json
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from muaudit.arrays import ARRAYS_FILE, ROC_FILE, AuditArrays, merge_for_comparison, npz_bytes
from muaudit.results import Scorecard, _fmt, format_interval, provenance_items

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from muaudit.comparison import Comparison

REPORT_FILE = "report.html"

_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:90%}th,td{border:1px solid #ccc;padding:3px 8px}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;display:block;margin:.5em 0}
.aligned{background:#dff0d8}.over-forgetting{background:#f8d0e4}.under-forgetting{background:#d0ddf0}
.undetermined{background:#eee}.warning{color:#a00}details{margin:1em 0}pre{white-space:pre-wrap;font-size:80%}
.note{color:#555;font-size:90%}"""


# ------------------------------------------------------------------------------------------ files
def report_files(result: "Scorecard | Comparison") -> dict[str, str | bytes]:
    """``report.html`` and, when the audit kept them, ``arrays.npz`` and ``roc.npz`` (see :mod:`muaudit.arrays`)."""
    arrays = _result_arrays(result)
    html = scorecard_html(result, arrays) if isinstance(result, Scorecard) else comparison_html(result, arrays)
    files: dict[str, str | bytes] = {REPORT_FILE: html}
    if arrays is not None:
        files[ARRAYS_FILE] = npz_bytes(arrays.to_npz())
        files[ROC_FILE] = npz_bytes(arrays.roc_npz())
    return files


def _result_arrays(result: "Scorecard | Comparison") -> AuditArrays | None:
    if isinstance(result, Scorecard):
        return result.arrays
    return merge_for_comparison((c.method["name"], c.arrays) for c in result.scorecards)


def render(path: str | Path) -> Path:
    """Write ``report.html`` for a ``scorecard.json`` or ``comparison.json`` (``path``: the file or its folder),
    with the per-example plots when ``arrays.npz`` lies beside it. Returns the report's path."""
    from muaudit.comparison import Comparison

    path = Path(path)
    if path.is_dir():
        path = next(p for p in (path / "scorecard.json", path / "comparison.json") if p.exists())
    raw = json.loads(path.read_text())
    arrays_path = path.parent / ARRAYS_FILE
    arrays = AuditArrays.load(str(arrays_path)) if arrays_path.exists() else None
    html = (comparison_html(Comparison.from_dict(raw), arrays) if isinstance(raw, list) or "scorecards" in raw
            else scorecard_html(Scorecard.from_dict(raw), arrays))
    out = path.parent / REPORT_FILE
    out.write_text(html, encoding="utf-8")
    return out


# ------------------------------------------------------------------------------------------ pages
def scorecard_html(card: Scorecard, arrays: AuditArrays | None = None) -> str:
    """The report of one audit."""
    arrays = arrays if arrays is not None else card.arrays
    body = [f"<h1>{escape(card._title())}</h1>", _method_summary(card), _signal(card)]
    if card.verdicts:
        body += [f"<h2>Streisand checks: {escape(str(card.verdict_summary))}</h2>", _verdict_table(card)]
    body += ["<h2>Readouts</h2>", _readout_table(card), "<h2>Plots</h2>", *_plots([card], card, arrays)]
    body += [_diagnostics(card), f"<p class=note>{escape(card._timing_line())}</p>",
             _provenance("Provenance", card.provenance)]
    return _page(card._title(), body)


def comparison_html(comparison: "Comparison", arrays: AuditArrays | None = None) -> str:
    """The report of a comparison: one column per method, shared gold models."""
    title = (f"muaudit comparison on task {comparison.task} [{comparison.task_hash[:12]}], "
             f"{comparison.gold_models} gold model(s)")
    cards = list(comparison.scorecards)
    body = [f"<h1>{escape(title)}</h1>"]
    if cards:
        arrays = arrays if arrays is not None else _result_arrays(comparison)
        body += [_signal(cards[0]), "<h2>Streisand checks</h2>", _comparison_verdicts(cards),
                 "<h2>Readouts</h2>", _comparison_readouts(cards), "<h2>Plots</h2>",
                 *_plots(cards, comparison, arrays)]
    else:
        body.append("<p>No method produced a scorecard.</p>")
    if comparison.failures:
        rows = [[f.method, f"{f.distribution} {f.version}", f.kind, f.reason] for f in comparison.failures]
        body += ["<h2>Failed methods</h2>", _table(["method", "distribution", "failure", "reason"], rows)]
    body += [_provenance(f"Provenance: {c.method['name']}", c.provenance) for c in cards]
    return _page(title, body)


def _page(title: str, body: Sequence[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width, initial-scale=1'>"
            f"<title>{escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(part for part in body if part) + "\n</body></html>\n")


# ----------------------------------------------------------------------------------------- tables
def _table(header: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str] | None = None,
           titles: Sequence[str] | None = None) -> str:
    """An HTML table; cells are escaped; numeric-looking cells are right-aligned."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    lines = []
    for i, row in enumerate(rows):
        cls = f" class='{escape(classes[i])}'" if classes and classes[i] else ""
        tip = f" title='{escape(titles[i])}'" if titles else ""
        cells = "".join(f"<td{' class=num' if _numeric(c) else ''}>{escape(c)}</td>" for c in row)
        lines.append(f"<tr{cls}{tip}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def _numeric(cell: str) -> bool:
    return bool(cell) and (cell[0].isdigit() or cell[0] in "-+." and cell[1:2].isdigit())


def _readout_table(card: Scorecard) -> str:
    header = ["readout", "unit", "unlearned [95% interval]", "original", "gold", "gap", "gold-vs-gold (max)"]
    rows = [[r.name, r.unit, format_interval(r.unlearned, card.interval(r.name)), _fmt(r.original), _fmt(r.gold),
             _fmt(r.gap), _fmt(r.spread_max)] for r in card.readouts]
    return _table(header, rows, titles=[r.description for r in card.readouts]) + _definitions(card)


def _definitions(card: Scorecard) -> str:
    items = "".join(f"<li><code>{escape(r.name)}</code> ({escape(r.unit)}): {escape(r.description)}</li>"
                    for r in card.readouts)
    return f"<details><summary>Readout definitions</summary><ul>{items}</ul></details>"


def _verdict_table(card: Scorecard) -> str:
    header = ["check", "verdict", "unlearned [95% interval]", "gold band", "original", "evidence"]
    rows = [[v.check, v.verdict, format_interval(v.unlearned, v.interval),
             f"[{_fmt(v.band[0])}, {_fmt(v.band[1])}]", _fmt(v.original), v.evidence] for v in card.verdicts]
    return _table(header, rows, classes=[v.verdict for v in card.verdicts])


def _comparison_readouts(cards: Sequence[Scorecard]) -> str:
    names = [c.method["name"] for c in cards]
    header = ["readout", "unit", *[f"{n} [95% interval]" for n in names], "gold", "gold-vs-gold (max)"]
    first = cards[0]
    rows = [[r.name, r.unit, *[format_interval(c.readouts[i].unlearned, c.interval(r.name)) for c in cards],
             _fmt(r.gold), _fmt(r.spread_max)] for i, r in enumerate(first.readouts)]
    rows.append(["method time", "s", *[f"{c.timings['method_seconds']:.3f}" for c in cards],
                 f"{first.timings['gold_seconds']:.3f}", "-"])
    return _table(header, rows, titles=[r.description for r in first.readouts] + ["wall-clock seconds"]) + \
        _definitions(first)


def _comparison_verdicts(cards: Sequence[Scorecard]) -> str:
    checks = list(dict.fromkeys(v.check for c in cards for v in c.verdicts))
    header = ["method", "summary", *checks]
    rows = []
    for card in cards:
        found = {v.check: v for v in card.verdicts}
        rows.append([card.method["name"], str(card.verdict_summary),
                     *[found[c].verdict if c in found else "-" for c in checks]])
    html = _table(header, rows)
    for verdict in ("over-forgetting", "under-forgetting", "aligned", "undetermined"):  # colour the cells
        html = html.replace(f"<td>{verdict}</td>", f"<td class='{verdict}'>{verdict}</td>")
    return html


def _method_summary(card: Scorecard) -> str:
    method, task = card.method, card.task
    params = ", ".join(f"{k}={v}" for k, v in sorted(method["params"].items())) or "defaults"
    return (f"<p>Method <b>{escape(method['name'])}</b> ({escape(params)}; seed {method.get('seed')}) on task "
            f"<b>{escape(task['name'])}</b> ({escape(str(task.get('dataset')))}, {escape(str(task.get('arch')))}, "
            f"forget set of {task.get('forget_size')}), against {card.provenance.get('gold_models')} gold model(s) "
            f"retrained without the forget set.</p>")


def _signal(card: Scorecard) -> str:
    if not card.signal:
        return ""
    warnings = "".join(f"<p class=warning>Warning: {escape(w)}</p>" for w in card.signal["warnings"])
    return f"<p><b>Signal:</b> {escape(card.signal['line'])}</p>{warnings}"


def _diagnostics(card: Scorecard) -> str:
    from muaudit.results import _fmt_value

    if not card.diagnostics:
        return ""
    rows = [[k, _fmt_value(v)] for k, v in card.diagnostics.items()]
    return "<h2>Method diagnostics</h2>" + _table(["diagnostic", "value"], rows)


def _provenance(title: str, provenance: dict[str, Any]) -> str:
    items = "".join(f"<li>{escape(line)}</li>" for line in provenance_items(provenance))
    full = escape(json.dumps(provenance, indent=2, sort_keys=True))
    return f"<details><summary>{escape(title)}</summary><ul>{items}</ul><pre>{full}</pre></details>"


# ------------------------------------------------------------------------------------------ plots
def _plots(cards: Sequence[Scorecard], obj: Any, arrays: AuditArrays | None) -> list[str]:
    """Every plot as an inline PNG, with a caption."""
    from muaudit.report import plots as P

    out = []
    for report in cards[0].attacks:
        left, right = P.new_axes(5.0, 4.0, ncols=2)
        P.roc(obj, report.name, arrays=arrays, ax=left)
        P.roc(obj, report.name, arrays=arrays, log=True, ax=right)
        out.append(_figure(left, f"ROC of the {report.name} attack, linear and log-log: D_f (members) against "
                                 "non-members, for every model; shaded: the gold models' band"))
    left, right = P.new_axes(5.0, 3.6, ncols=2)
    P.distribution(obj, "entropy", arrays=arrays, ax=left)
    P.distribution(obj, "loss", arrays=arrays, ax=right)
    out.append(_figure(left, "D_f entropy and loss distributions (nats); shaded: the gold models' band"))
    out.append(_figure(P.gaps(cards), "Each readout's deviation from gold in gold-vs-gold spreads, with the "
                                      "unlearned value's 95% interval where the audit has one"))
    if any(c.verdicts for c in cards):
        out.append(_figure(P.verdicts(cards), "Streisand checks at a glance"))
    for card in cards:
        for report in card.attacks:
            if report.unlearned.get("most_exposed"):
                out.append(_figure(P.exposed(card, report.name, arrays=card.arrays or arrays),
                                   f"{card.method['name']}: the D_f examples the {report.name} attack scores most "
                                   "like members (position in D_f, member score)"))
    return out


def _figure(ax: "Axes", caption: str) -> str:
    buffer = io.BytesIO()
    ax.figure.savefig(buffer, format="png", dpi=90)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f"<figure><img alt='{escape(caption)}' src='data:image/png;base64,{data}'>"
            f"<figcaption class=note>{escape(caption)}</figcaption></figure>")
