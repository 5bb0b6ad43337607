"""Plots of a scorecard or a comparison (matplotlib, Agg canvas; no pyplot, so no global state is touched).

Every function draws on ``ax`` when given (a new figure otherwise), saves the figure to ``path`` when given, and
returns the Axes (``ax.figure`` is the figure). Per-example plots read the audit's :class:`~muaudit.arrays.
AuditArrays` (``card.arrays`` after an audit, or ``AuditArrays.load("arrays.npz")``); without them they fall back
to what the scorecard JSON keeps (summary ROC points of the first gold model, entropy histograms).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from muaudit.arrays import AuditArrays, merge_for_comparison

if TYPE_CHECKING:
    from muaudit.comparison import Comparison
    from muaudit.results import Readout, Scorecard

__all__ = ["roc", "distribution", "gaps", "verdicts", "exposed", "new_axes", "save"]

GOLD = "#c8a000"
ORIGINAL = "#444444"
METHOD_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
VERDICT_COLORS = {"aligned": "#7fc97f", "over-forgetting": "#f0027f", "under-forgetting": "#386cb0",
                  "undetermined": "#d9d9d9"}


# ---------------------------------------------------------------------------------------- helpers
def new_axes(width: float = 5.0, height: float = 4.0, ncols: int = 1) -> list[Axes]:
    """``ncols`` Axes side by side on a new figure with an Agg canvas."""
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    return list(np.atleast_1d(fig.subplots(1, ncols)))


def save(ax: Axes, path: str | Path | None) -> Axes:
    """Save ``ax``'s figure to ``path`` (format from the suffix) when given."""
    if path is not None:
        ax.figure.savefig(path, dpi=100)
    return ax


def _axes(ax: Axes | None, width: float = 5.0, height: float = 4.0) -> Axes:
    return ax if ax is not None else new_axes(width, height)[0]


def _cards(obj: "Scorecard | Comparison | Sequence[Scorecard]") -> list["Scorecard"]:
    from muaudit.results import Scorecard

    if isinstance(obj, Scorecard):
        return [obj]
    return list(getattr(obj, "scorecards", obj))


def _arrays(obj: Any, arrays: AuditArrays | None) -> AuditArrays | None:
    """The given arrays, else the scorecard's, else (comparison) every scorecard's merged."""
    if arrays is not None:
        return arrays
    cards = _cards(obj)
    if len(cards) == 1:
        return cards[0].arrays
    return merge_for_comparison((c.method["name"], c.arrays) for c in cards)


def _role_style(role: str, unlearned: Sequence[str]) -> dict[str, Any]:
    """Colour, width and label of one model's curve."""
    if role in unlearned:
        label = "unlearned" if role == "unlearned" else role.removeprefix("unlearned:")
        return {"color": METHOD_COLORS[unlearned.index(role) % len(METHOD_COLORS)], "lw": 1.8, "label": label}
    if role == "original":
        return {"color": ORIGINAL, "lw": 1.4, "ls": "--", "label": "original"}
    return {"color": GOLD, "lw": 0.9, "alpha": 0.9, "label": role.replace("_", " ")}


def _no_data(ax: Axes, what: str) -> Axes:
    ax.text(0.5, 0.5, f"no per-example arrays:\n{what} not available", ha="center", va="center",
            transform=ax.transAxes)
    ax.set_axis_off()
    return ax


# -------------------------------------------------------------------------------------------- ROC
def roc(obj: "Scorecard | Comparison", attack: str | None = None, *, arrays: AuditArrays | None = None,
        log: bool = False, ax: Axes | None = None, path: str | Path | None = None) -> Axes:
    """ROC curves of ``attack`` (default: the first) for the unlearned model(s), the original and every gold model,
    with the gold models' band (lowest to highest TPR) shaded; ``log=True`` for log-log axes."""
    ax = _axes(ax)
    cards = _cards(obj)
    attack = attack or cards[0].attacks[0].name
    data = _arrays(obj, arrays)
    if data is not None and attack in data.scores:
        curves = {role: s.roc() for role, s in data.scores[attack].items()}
        n_neg = len(next(iter(data.scores[attack].values())).nonmembers)
        unlearned = data.unlearned
    else:  # the scorecard's summary points: unlearned, original and the first gold only
        report = next(a for a in cards[0].attacks if a.name == attack)
        curves = {role: (np.asarray(report.roc[key]["fpr"]), np.asarray(report.roc[key]["tpr"]))
                  for role, key in (("unlearned", "unlearned"), ("original", "original"), ("gold_0", "gold"))
                  if key in report.roc}
        n_neg = int(report.unlearned["n_nonmembers"])
        unlearned = ("unlearned",)
    golds = [r for r in curves if r.startswith("gold_")]
    grid = np.geomspace(1.0 / max(n_neg, 1), 1.0, 400) if log else np.linspace(0.0, 1.0, 401)
    if len(golds) > 1:
        stacked = np.stack([_step(*curves[g], grid) for g in golds])
        ax.fill_between(grid, stacked.min(0), stacked.max(0), color=GOLD, alpha=0.25, lw=0, label="gold band")
    for role, (fpr, tpr) in curves.items():
        ax.plot(fpr, tpr, drawstyle="steps-post", **_role_style(role, unlearned))
    ax.plot(grid, grid, color="#999999", lw=0.8, ls=":", label="chance")
    _roc_axes(ax, log, n_neg)
    ax.set_title(f"{attack}: ROC ({'log-log' if log else 'linear'})")
    ax.legend(fontsize=7, loc="lower right")
    return save(ax, path)


def _step(fpr: np.ndarray, tpr: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The ROC step function at ``grid``: the highest TPR reached at an FPR not above each grid point."""
    index = np.searchsorted(fpr, grid + 1e-12, side="right") - 1
    return np.asarray(tpr)[np.clip(index, 0, len(tpr) - 1)]


def _roc_axes(ax: Axes, log: bool, n_neg: int) -> None:
    ax.set_xlabel("false-positive rate (non-members called member)")
    ax.set_ylabel("true-positive rate (D_f called member)")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(1.0 / max(n_neg, 1), 1.0)
        ax.set_ylim(1.0 / max(n_neg, 1), 1.05)
    else:
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)


# -------------------------------------------------------------------------------- distributions
def distribution(obj: "Scorecard | Comparison", quantity: str = "entropy", *, arrays: AuditArrays | None = None,
                 bins: int = 30, ax: Axes | None = None, path: str | Path | None = None) -> Axes:
    """The D_f distribution of ``quantity`` ("entropy" or "loss", in nats) of the unlearned model(s), the original
    and every gold model (fraction of D_f per bin), the gold models' band (lowest to highest per bin) shaded."""
    if quantity not in ("entropy", "loss"):
        raise ValueError(f"quantity must be 'entropy' or 'loss', not {quantity!r}")
    ax = _axes(ax)
    data = _arrays(obj, arrays)
    if data is None:
        return _entropy_histograms(_cards(obj)[0], ax, path) if quantity == "entropy" else \
            save(_no_data(ax, "D_f losses"), path)
    values = getattr(data, quantity)
    edges = _edges(np.concatenate([values[r] for r in data.roles]), quantity, bins)
    density = {r: np.histogram(np.clip(values[r], edges[0], edges[-1]), edges)[0] / len(values[r])
               for r in data.roles}
    if len(data.golds) > 1:
        stacked = np.stack([density[g] for g in data.golds])
        ax.stairs(stacked.max(0), edges, baseline=stacked.min(0), fill=True, color=GOLD, alpha=0.25,
                  label="gold band")
    for role in data.roles:
        ax.stairs(density[role], edges, **_role_style(role, data.unlearned))
    if quantity == "loss":
        ax.set_xscale("log")
    ax.set_xlabel(f"{'softmax entropy' if quantity == 'entropy' else 'cross-entropy loss'} on D_f (nats)")
    ax.set_ylabel("fraction of D_f")
    ax.set_title(f"D_f {quantity} distribution")
    ax.legend(fontsize=7)
    return save(ax, path)


def _edges(values: np.ndarray, quantity: str, bins: int) -> np.ndarray:
    if quantity == "loss":  # log-spaced: losses on D_f span orders of magnitude
        positive = values[values > 0]
        low = max(float(positive.min()) if len(positive) else 1e-6, 1e-6)
        return np.geomspace(low, max(float(values.max()), low * 10), bins + 1)
    return np.linspace(0.0, max(float(values.max()), 1e-6), bins + 1)


def _entropy_histograms(card: "Scorecard", ax: Axes, path: str | Path | None) -> Axes:
    """The scorecard's 20-bin entropy histograms (unlearned, original, first gold): the JSON-only fallback."""
    hist = card.entropy_histograms
    edges = np.asarray(hist["bin_edges"])
    for role, key in (("gold_0", "gold"), ("original", "original"), ("unlearned", "unlearned")):
        counts = np.asarray(hist[key], dtype=float)
        ax.stairs(counts / max(counts.sum(), 1), edges, **_role_style(role, ("unlearned",)))
    ax.set_xlabel("softmax entropy on D_f (nats)")
    ax.set_ylabel("fraction of D_f")
    ax.set_title("D_f entropy distribution")
    ax.legend(fontsize=7)
    return save(ax, path)


# -------------------------------------------------------------------------------------------- gaps
def gaps(obj: "Scorecard | Comparison | Sequence[Scorecard]", *, ax: Axes | None = None,
         path: str | Path | None = None) -> Axes:
    """Each readout's deviation from gold per method, in units of the gold-vs-gold spread, against the gold band.

    Model readouts (e.g. forget error) show ``(unlearned - gold) / spread`` with the band [-1, 1]; distance
    readouts (e.g. JS to gold) show ``distance / spread`` with the band [0, 1]. ``spread`` is the largest
    gold-vs-gold deviation (with one gold model: the original's deviation, so 1 = as far as the original).
    Horizontal bars: the unlearned value's 95% interval where the audit has one; grey x: the original.
    """
    cards = _cards(obj)
    rows = [r for r in cards[0].readouts if _scale(r) is not None]
    ax = _axes(ax, 7.5, 0.8 + 0.26 * max(len(rows), 1))
    for y, readout in enumerate(rows):
        low = -1.0 if readout.kind == "model" else 0.0
        ax.fill_betweenx([y - 0.4, y + 0.4], low, 1.0, color=GOLD, alpha=0.3, lw=0)
        original = _deviation(readout, readout.original)
        if original is not None:
            ax.plot([original / _scale(readout)], [y], "x", color=ORIGINAL, ms=5)
    for i, card in enumerate(cards):
        _gap_points(ax, card, rows, i, len(cards))
    ax.axvline(0.0, color="#999999", lw=0.6)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_yticks(range(len(rows)), [f"{r.name} ({r.unit})" for r in rows], fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("deviation from gold ÷ gold-vs-gold spread (symlog; shaded: the gold band)")
    ax.set_title("Readouts against the gold band (x: original)")
    ax.legend(fontsize=7, loc="lower right")
    return save(ax, path)


def _scale(readout: "Readout") -> float | None:
    """The gold spread of a readout (the original's deviation when there is no spread); None: nothing to plot."""
    if readout.deviation is None:
        return None
    spread = readout.spread_max
    if spread:
        return float(spread)
    original = _deviation(readout, readout.original)
    return abs(original) if original else None


def _deviation(readout: "Readout", value: float | None) -> float | None:
    if value is None:
        return None
    if readout.kind == "model":
        return None if readout.gold is None else value - readout.gold
    return value


def _gap_points(ax: Axes, card: "Scorecard", rows: Sequence["Readout"], i: int, n: int) -> None:
    """One method's points (and intervals) on the rows of :func:`gaps`, slightly offset per method."""
    ys, xs, errs = [], [], []
    for y, first in enumerate(rows):
        readout = card.readout(first.name)
        scale, x = _scale(first), _deviation(readout, readout.unlearned)
        if x is None or scale is None:
            continue
        interval = card.interval(first.name)
        lo, hi = (x, x) if interval is None else (_deviation(readout, interval[0]), _deviation(readout, interval[1]))
        ys.append(y + (i - (n - 1) / 2) * 0.6 / max(n, 1))
        xs.append(x / scale)
        errs.append((max(x - lo, 0.0) / scale, max(hi - x, 0.0) / scale))
    color = METHOD_COLORS[i % len(METHOD_COLORS)]
    ax.errorbar(xs, ys, xerr=np.asarray(errs).T if errs else None, fmt="o", ms=3.5, color=color, elinewidth=1,
                capsize=2, label=card.method["name"])


# ---------------------------------------------------------------------------------------- verdicts
def verdicts(obj: "Scorecard | Comparison | Sequence[Scorecard]", *, ax: Axes | None = None,
             path: str | Path | None = None) -> Axes:
    """The Streisand verdicts at a glance: one row per method, one cell per check, coloured by verdict."""
    cards = _cards(obj)
    checks = list(dict.fromkeys(v.check for c in cards for v in c.verdicts))
    ax = _axes(ax, 1.6 + 1.1 * max(len(checks), 1), 1.0 + 0.45 * len(cards))
    if not checks:
        return save(_no_data(ax, "Streisand verdicts"), path)
    names = list(VERDICT_COLORS)
    grid = np.full((len(cards), len(checks)), names.index("undetermined"))
    for i, card in enumerate(cards):
        for v in card.verdicts:
            grid[i, checks.index(v.check)] = names.index(v.verdict) if v.verdict in names else 3
            ax.text(checks.index(v.check), i, v.verdict.replace("-forgetting", ""), ha="center", va="center",
                    fontsize=7)
    ax.imshow(grid, cmap=ListedColormap(list(VERDICT_COLORS.values())), vmin=-0.5, vmax=len(names) - 0.5,
              aspect="auto")
    ax.set_xticks(range(len(checks)), checks, rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(len(cards)), [f"{c.method['name']}: {c.verdict_summary}" for c in cards], fontsize=8)
    ax.set_title("Streisand checks (unlearned vs the gold band)")
    return save(ax, path)


# ----------------------------------------------------------------------------------- most exposed
def exposed(card: "Scorecard", attack: str | None = None, *, arrays: AuditArrays | None = None, count: int = 10,
            ax: Axes | None = None, path: str | Path | None = None) -> Axes:
    """The D_f examples ``attack`` (default: the first) scores most like members on the unlearned model: their
    images with their scores where the data are images (thumbnails in the arrays), else a bar chart."""
    report = next(a for a in card.attacks if attack in (None, a.name))
    items = list(report.unlearned.get("most_exposed") or ())[:count]
    data = arrays if arrays is not None else card.arrays
    images = [None if data is None else data.thumbnail(int(e["forget_position"])) for e in items]
    ax = _axes(ax, max(1.2 * len(items), 4.0), 2.2)
    if not items:
        return save(_no_data(ax, "most exposed examples"), path)
    if all(img is not None for img in images):
        _mosaic(ax, [np.asarray(img) for img in images], items)
    else:
        ax.bar(range(len(items)), [e["score"] for e in items], color=METHOD_COLORS[0])
        ax.set_xticks(range(len(items)), [str(e["forget_position"]) for e in items], fontsize=7)
        ax.set_xlabel("position in D_f")
        ax.set_ylabel("member score")
    ax.set_title(f"{report.name}: most exposed D_f examples on the unlearned model")
    return save(ax, path)


def _mosaic(ax: Axes, images: list[np.ndarray], items: list[dict[str, float]]) -> None:
    """The images side by side (one imshow), each captioned with its D_f position and member score."""
    height, width, channels = images[0].shape
    pad = max(1, width // 8)
    tiles = [np.pad(img, ((0, 0), (0, pad), (0, 0)), constant_values=255) for img in images]
    mosaic = np.concatenate(tiles, axis=1)
    ax.imshow(mosaic[..., 0] if channels == 1 else mosaic, cmap="gray" if channels == 1 else None, vmin=0,
              vmax=255, interpolation="nearest")
    for k, item in enumerate(items):
        ax.text(k * (width + pad) + width / 2, height + 0.5, f"#{item['forget_position']}\n{item['score']:.3g}",
                ha="center", va="top", fontsize=7)
    ax.set_axis_off()
