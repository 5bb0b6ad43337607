"""``retrain``: the gold recipe as a method (the exact-unlearning reference).

Builds the task's architecture with every layer freshly initialised and trains it with the task's own recipe on
D_r. Its scorecard gaps must lie within the gold-vs-gold spread: it is another draw of the gold model.
"""
from __future__ import annotations

from torch import nn

from muaudit.base import MethodContext, MethodData, UnlearningMethod
from muaudit.training import derive_seed, fit


class Retrain(UnlearningMethod):
    """Retrain from scratch on the retain set with the task's recipe."""

    name = "retrain"
    summary = "Exact unlearning: retrain from a fresh initialisation on D_r with the task's recipe."
    paper = "Reference method (gold standard) used by every unlearning paper"
    needs = frozenset({"retain"})

    def unlearn(self, model: nn.Module, data: MethodData, ctx: MethodContext) -> nn.Module:
        fresh = ctx.fresh_model(derive_seed(ctx.seed, "init"))
        return fit(fresh, data.retain, ctx.recipe, derive_seed(ctx.seed, "order"), ctx.device, ctx.progress)
