"""``neggrad``: gradient ascent on the forget set (GA / NegGrad).

Update rule: maximise cross-entropy on D_f, i.e. SGD on ``-CE(f(x_f), y_f)``. Defaults follow the SalUn README
(lr 1e-4, 5 epochs, SGD momentum 0.9, weight decay 5e-4, batch 256); a SalUn maintainer suggests 5e-4 to 1e-3
when forgetting fails. Uses only the forget set. Gradient ascent is unbounded: ``max_loss`` (default off) stops an
epoch's updates once the mean forget loss of a batch exceeds it, a guard against divergence that the reference
code does not have.
"""
from __future__ import annotations

import torch
from torch import nn

from muaudit.base import MethodContext, MethodData, UnlearningMethod
from muaudit.params import Interval, Param, Search
from muaudit.presets import preset_param


PRESETS: dict[str, dict[str, object]] = {
    "paper": {"epochs": 5, "lr": 1e-4},
    "digits": {"epochs": 13, "lr": 0.02},
    "digits-class": {"epochs": 5, "lr": 0.05},
    "fmnist": {"epochs": 3, "lr": 3e-3},
    "fmnist-class": {"epochs": 3, "lr": 1e-3},
}


class NegGrad(UnlearningMethod):
    """Gradient ascent on D_f."""

    name = "neggrad"
    summary = "Gradient ascent on the forget set (NegGrad / GA)."
    paper = "Golatkar et al. 2020; Thudi et al. 2022 (GA baseline); defaults from the SalUn README"
    presets = PRESETS
    params = (
        preset_param(PRESETS),
        Param("epochs", int, 5, "epochs over D_f", Interval(1, None), search=Search(1, 20)),
        Param("lr", float, 1e-4, "SGD learning rate", Interval(0, None, closed="neither"),
              search=Search(1e-5, 0.1, log=True)),
        Param("batch_size", int, 256, "mini-batch size", Interval(1, None)),
        Param("momentum", float, 0.9, "SGD momentum", Interval(0, 1, closed="left")),
        Param("weight_decay", float, 5e-4, "SGD weight decay", Interval(0, None)),
        Param("max_loss", float, None, "stop once a batch's forget loss exceeds this (none = never)",
              Interval(0, None, closed="neither"), nullable=True),
    )

    def unlearn(self, model: nn.Module, data: MethodData, ctx: MethodContext) -> nn.Module:
        p = self.hparams
        model.to(ctx.device).train()
        opt = torch.optim.SGD(model.parameters(), lr=p["lr"], momentum=p["momentum"], weight_decay=p["weight_decay"])
        gen = ctx.generator("order")
        loss_fn = nn.CrossEntropyLoss()
        for _ in range(p["epochs"]):
            for x, y in data.forget.batches(p["batch_size"], shuffle=True, generator=gen):
                loss = loss_fn(model(x.to(ctx.device)), y.to(ctx.device))
                if p["max_loss"] is not None and loss.item() > p["max_loss"]:
                    return model.eval()
                opt.zero_grad(set_to_none=True)
                (-loss).backward()
                opt.step()
        return model.eval()
