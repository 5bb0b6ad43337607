"""``muaudit.plot``: the plots of a scorecard or comparison (see :mod:`muaudit.report.plots`).

    from muaudit import plot
    plot.roc(card, "loss", log=True, path="roc.png")
"""
from __future__ import annotations

from muaudit.report.plots import __all__, distribution, exposed, gaps, new_axes, roc, save, verdicts  # noqa: F401
