"""``finetune``: fine-tune the original model on the retain set (FT; "catastrophic forgetting" baseline).

Update rule: minimise cross-entropy on D_r with SGD (momentum 0.9, weight decay 5e-4) for ``epochs`` epochs.
Defaults follow the SSD reference code (``fit_one_cycle(5, lr=0.02)`` on D_r, SGD momentum 0.9, wd 5e-4); the
SalUn code uses 10 epochs at lr 0.01 (set ``epochs=10 lr=0.01``). The learning rate is constant, as in SalUn's
10-epoch runs whose step milestones never fire. Needs the retain set.
"""
from __future__ import annotations

from torch import nn

from muaudit.base import MethodContext, MethodData, UnlearningMethod
from muaudit.params import Interval, Param, Search
from muaudit.presets import preset_param
from muaudit.task import Recipe
from muaudit.training import derive_seed, fit


PRESETS: dict[str, dict[str, object]] = {
    "paper": {"epochs": 5, "lr": 0.02},
    "digits": {"epochs": 14, "lr": 0.25},
    "digits-class": {"epochs": 20, "lr": 0.5},
    "fmnist": {"epochs": 10, "lr": 0.1},
    "fmnist-class": {"epochs": 10, "lr": 0.05},
}


class Finetune(UnlearningMethod):
    """Fine-tune on D_r."""

    name = "finetune"
    summary = "Fine-tune the original model on the retain set (FT)."
    paper = "Warnecke et al. 2023 / Golatkar et al. 2020 (FT baseline); defaults from the SSD code"
    needs = frozenset({"retain"})
    presets = PRESETS
    params = (
        preset_param(PRESETS),
        Param("epochs", int, 5, "epochs over D_r", Interval(1, None), search=Search(1, 30)),
        Param("lr", float, 0.02, "SGD learning rate", Interval(0, None, closed="neither"),
              search=Search(1e-3, 0.5, log=True)),
        Param("batch_size", int, 128, "mini-batch size", Interval(1, None)),
        Param("momentum", float, 0.9, "SGD momentum", Interval(0, 1, closed="left")),
        Param("weight_decay", float, 5e-4, "SGD weight decay", Interval(0, None)),
    )

    def unlearn(self, model: nn.Module, data: MethodData, ctx: MethodContext) -> nn.Module:
        p = self.hparams
        recipe = Recipe(epochs=p["epochs"], batch_size=p["batch_size"], optimizer="sgd", lr=p["lr"],
                        momentum=p["momentum"], weight_decay=p["weight_decay"], schedule="constant")
        return fit(model, data.retain, recipe, derive_seed(ctx.seed, "order"), ctx.device, ctx.progress)
