"""``neggrad-plus``: gradient ascent on D_f balanced by descent on D_r (NegGrad+).

Paper: Kurmanji, Triantafillou, Hayes and Triantafillou, "Towards Unbounded Machine Unlearning", NeurIPS 2023
(the SCRUB paper), which introduced NegGrad+ as a strengthened NegGrad baseline. Reference code:
``meghdadk/SCRUB``, ``thirdparty/repdistiller/helper/loops.py::train_negrad`` and ``negative_grad`` in
``small_scale_unlearning.ipynb``.

Update rule. One epoch is one pass over D_r; each step pairs the next retain batch with the next forget batch
(the forget batches are cycled, ``zip(retain_loader, cycle(forget_loader))``) and takes one optimiser step on

    L = beta * CE(f(x_r), y_r) - (1 - beta) * CE(f(x_f), y_f)  [+ beta * (l2_to_original / 2) * ||theta - theta_0||^2]

Hyperparameters (defaults from the SCRUB small-scale notebook, ``args.ng_*``):
- ``beta`` = 0.95: weight of the retain loss (``ng_alpha = 0.95``; the SCRUB code calls it alpha).
- ``epochs`` = 10, ``lr`` = 0.01: ``ng_epochs``, ``ng_lr``.
- ``momentum`` = 0, ``weight_decay`` = 0: the notebook's ``torch.optim.SGD(model.parameters(), lr=lr,
  weight_decay=0.0)`` (plain SGD).
- ``batch_size`` = 128 (retain batches): the notebook rebuilds ``retain_loader`` with ``args.batch_size`` = 128
  just before fine-tuning and NegGrad+; ``forget_batch_size`` = 64: ``args.forget_bs``.
- ``l2_to_original`` = 0: see the decision below.

Data needs: the retain set (and the forget set, always given).

Decisions the reference leaves open:
- [DECISION] The notebook's ``run_neggrad_epoch`` adds ``l2_penalty(model, model_init, args.weight_decay)``
  (``wd/2 * ||theta - theta_0||^2``, wd = 0.1 in the small-scale runs) inside the beta term, whereas the loss of
  the paper and of ``loops.py::train_negrad`` has no such term. The paper's loss is the default
  (``l2_to_original = 0``); pass ``l2_to_original=0.1`` to reproduce the notebook.
- [DECISION] The model is in train mode, as in ``loops.py::train_negrad``; the notebook's copy calls
  ``model.eval()`` (which only matters for BatchNorm and dropout).
- [DECISION] As ``itertools.cycle`` does, the forget batches of an epoch are drawn once (a fresh shuffle per
  epoch) and replayed in the same order when D_f has fewer batches than D_r.
- [DECISION] Ascent is unbounded; no loss guard is added (the beta-weighted retain term is the method's own
  guard).
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from muaudit.base import MethodContext, MethodData, UnlearningMethod
from muaudit.data import Split
from muaudit.params import Interval, Param, Search
from muaudit.presets import preset_param
from muaudit.training import progress_bar


def l2_to_reference(model: nn.Module, reference: nn.Module) -> torch.Tensor:
    """``sum ||theta - theta_ref||^2`` over the trainable parameters (the SCRUB notebook's ``l2_penalty``)."""
    terms = [(p - q).pow(2).sum() for p, q in zip(model.parameters(), reference.parameters()) if p.requires_grad]
    return torch.stack(terms).sum()


def forget_batches(forget: Split, batch_size: int, gen: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One shuffled pass over D_f, kept in memory so that it can be cycled like ``itertools.cycle``."""
    return list(forget.batches(batch_size, shuffle=True, generator=gen))


PRESETS: dict[str, dict[str, object]] = {
    "paper": {"beta": 0.95, "epochs": 10, "lr": 0.01},
    "digits": {"beta": 0.85, "epochs": 10, "lr": 0.1},
    "digits-class": {"beta": 0.85, "epochs": 5, "lr": 0.03},
    "fmnist": {"beta": 0.85, "epochs": 3, "lr": 0.1},
    "fmnist-class": {"beta": 0.95, "epochs": 3, "lr": 1e-3},
}


class NegGradPlus(UnlearningMethod):
    """beta * CE on D_r minus (1 - beta) * CE on D_f, one retain and one forget batch per step."""

    name = "neggrad-plus"
    summary = "NegGrad+: descent on D_r and ascent on D_f in every step, weighted by beta."
    paper = "Kurmanji et al., Towards Unbounded Machine Unlearning, NeurIPS 2023 (NegGrad+ baseline)"
    needs = frozenset({"retain"})
    presets = PRESETS
    params = (
        preset_param(PRESETS),
        Param("beta", float, 0.95, "weight of the retain loss; 1 - beta weighs the forget ascent",
              Interval(0, 1, closed="both"), search=Search(0.5, 0.999)),
        Param("epochs", int, 10, "passes over D_r", Interval(1, None), search=Search(1, 20)),
        Param("lr", float, 0.01, "SGD learning rate", Interval(0, None, closed="neither"),
              search=Search(1e-3, 0.5, log=True)),
        Param("batch_size", int, 128, "retain mini-batch size", Interval(1, None)),
        Param("forget_batch_size", int, 64, "forget mini-batch size", Interval(1, None)),
        Param("momentum", float, 0.0, "SGD momentum", Interval(0, 1, closed="left")),
        Param("weight_decay", float, 0.0, "SGD weight decay", Interval(0, None)),
        Param("l2_to_original", float, 0.0, "weight of (1/2)||theta - theta_0||^2 inside the beta term "
              "(0.1 reproduces the SCRUB notebook)", Interval(0, None)),
    )

    def unlearn(self, model: nn.Module, data: MethodData, ctx: MethodContext) -> nn.Module:
        p = self.hparams
        retain, forget = data.retain, data.forget
        if len(forget) == 0 or len(retain) == 0:
            return model.eval()
        model.to(ctx.device).train()
        original = copy.deepcopy(model).requires_grad_(False) if p["l2_to_original"] > 0 else None
        opt = torch.optim.SGD(model.parameters(), lr=p["lr"], momentum=p["momentum"],
                              weight_decay=p["weight_decay"])
        loss_fn = nn.CrossEntropyLoss()
        retain_gen, forget_gen = ctx.generator("retain-order"), ctx.generator("forget-order")
        steps = p["epochs"] * math.ceil(len(retain) / p["batch_size"])
        with progress_bar(steps, ctx.progress) as bar:
            for _ in range(p["epochs"]):
                cycled = forget_batches(forget, p["forget_batch_size"], forget_gen)
                for i, (x_r, y_r) in enumerate(retain.batches(p["batch_size"], shuffle=True, generator=retain_gen)):
                    x_f, y_f = cycled[i % len(cycled)]
                    retain_loss = loss_fn(model(x_r.to(ctx.device)), y_r.to(ctx.device))
                    if original is not None:
                        retain_loss = retain_loss + 0.5 * p["l2_to_original"] * l2_to_reference(model, original)
                    forget_loss = loss_fn(model(x_f.to(ctx.device)), y_f.to(ctx.device))
                    loss = p["beta"] * retain_loss - (1.0 - p["beta"]) * forget_loss
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    bar.update(1)
        return model.eval()
