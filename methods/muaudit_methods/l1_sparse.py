"""``l1-sparse``: fine-tune on D_r with a decaying L1 penalty on every weight (model-sparsity unlearning).

Paper: Jia, Liu, Ram, Yao, Liu, Liu, Sharma and Liu, "Model Sparsity Can Simplify Machine Unlearning",
NeurIPS 2023. Reference code: SalUn's ``OPTML-Group/Unlearn-Saliency/Classification/unlearn/FT.py::FT_l1``
(``FT_iter(..., with_l1=True)`` driven by ``unlearn/impl.py::iterative_unlearn``).

Update rule, for epoch ``e = 0 .. E-1`` and every mini-batch of D_r::

    alpha_e = alpha * (1 - e / (E - no_l1_epochs))   if e < E - no_l1_epochs,   else 0
    loss    = CE(f(x), y) + alpha_e * ||theta||_1     with ||theta||_1 = sum over ALL parameters of |theta_i|

minimised with SGD (momentum, weight decay). The penalty covers every parameter, biases and normalisation
affine parameters included (the reference concatenates ``model.parameters()``); normalisation buffers are not
parameters and are untouched. The penalty is added once per mini-batch, unscaled by the batch size.

Hyperparameters:

- ``alpha`` = 1e-4: the value used by third-party SalUn scripts for l1-sparse (the README leaves it as a
  placeholder). **Pitfall**: SalUn's argparse default ``--alpha 0.2`` belongs to IU/wfisher; used as this L1
  weight it adds ``0.2 * sign(theta)`` to every gradient and destroys the model. It is not the default here.
- ``epochs`` = 10, ``lr`` = 0.01: third-party SalUn l1-sparse scripts (the same recipe as SalUn's FT).
- ``momentum`` = 0.9, ``weight_decay`` = 5e-4, ``batch_size`` = 256: SalUn's ``iterative_unlearn`` optimiser and
  loaders. Its MultiStepLR milestones (91, 136) never fire in 10 epochs, so the learning rate is constant.
- ``no_l1_epochs`` = 0: SalUn's default; the last ``no_l1_epochs`` epochs run without the penalty.

Data needs: the retain set.

Decisions:

- [DECISION] ``alpha_e`` is clamped at 0 from epoch ``E - no_l1_epochs`` on (the reference does the same with its
  ``if``); with ``no_l1_epochs >= epochs`` the method is plain fine-tuning.
- [DECISION] No data augmentation (like ``finetune``); the data order comes from ``ctx.generator("order")``,
  the same stream ``finetune`` uses, so ``alpha = 0`` reproduces ``finetune`` with the same settings bit for bit.
- The L1 norm is computed as a sum of per-tensor absolute sums, mathematically identical to the reference's
  ``torch.linalg.norm(torch.cat(params), ord=1)`` without concatenating a copy of the model; its subgradient at
  0 is 0, as in the reference.
"""
from __future__ import annotations

import torch
from torch import nn

from muaudit.base import MethodContext, MethodData, UnlearningMethod
from muaudit.params import Interval, Param, Search
from muaudit.presets import preset_param


def l1_weight(alpha: float, epoch: int, epochs: int, no_l1_epochs: int) -> float:
    """The L1 coefficient of ``epoch`` (0-based): a linear decay to 0 over ``epochs - no_l1_epochs`` epochs."""
    active = epochs - no_l1_epochs
    if epoch >= active:
        return 0.0
    return alpha * (1.0 - epoch / active)


def l1_norm(model: nn.Module) -> torch.Tensor:
    """Sum of the absolute values of every parameter of ``model``."""
    return torch.stack([p.abs().sum() for p in model.parameters()]).sum()


PRESETS: dict[str, dict[str, object]] = {
    "paper": {"alpha": 1e-4, "epochs": 10, "lr": 0.01},
    "digits": {"alpha": 0.003, "epochs": 5, "lr": 0.1},
    "digits-class": {"alpha": 0.00262, "epochs": 7, "lr": 0.166},
    "fmnist": {"alpha": 1e-3, "epochs": 5, "lr": 0.05},
    "fmnist-class": {"alpha": 1e-3, "epochs": 5, "lr": 0.05},
}


class L1Sparse(UnlearningMethod):
    """Fine-tune on D_r with a linearly decaying L1 penalty on all parameters."""

    name = "l1-sparse"
    summary = "l1-sparse: fine-tune on the retain set with a linearly decaying L1 penalty on every weight."
    paper = ("Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023; "
             "defaults from SalUn's FT_l1 and third-party SalUn scripts")
    needs = frozenset({"retain"})
    presets = PRESETS
    params = (
        preset_param(PRESETS),
        Param("alpha", float, 1e-4, "initial L1 weight (NOT SalUn's argparse default 0.2)", Interval(0, None),
              search=Search(1e-6, 1e-2, log=True)),
        Param("epochs", int, 10, "epochs over D_r", Interval(1, None), search=Search(1, 20)),
        Param("lr", float, 0.01, "SGD learning rate", Interval(0, None, closed="neither"),
              search=Search(1e-3, 0.5, log=True)),
        Param("batch_size", int, 256, "mini-batch size", Interval(1, None)),
        Param("momentum", float, 0.9, "SGD momentum", Interval(0, 1, closed="left")),
        Param("weight_decay", float, 5e-4, "SGD weight decay", Interval(0, None)),
        Param("no_l1_epochs", int, 0, "final epochs without the L1 penalty", Interval(0, None)),
    )

    def unlearn(self, model: nn.Module, data: MethodData, ctx: MethodContext) -> nn.Module:
        p = self.hparams
        model.to(ctx.device).train()
        opt = torch.optim.SGD(model.parameters(), lr=p["lr"], momentum=p["momentum"],
                              weight_decay=p["weight_decay"])
        gen = ctx.generator("order")
        loss_fn = nn.CrossEntropyLoss()
        for epoch in range(p["epochs"]):
            alpha = l1_weight(p["alpha"], epoch, p["epochs"], p["no_l1_epochs"])
            for x, y in data.retain.batches(p["batch_size"], shuffle=True, generator=gen):
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(x.to(ctx.device)), y.to(ctx.device))
                if alpha > 0.0:
                    loss = loss + alpha * l1_norm(model)
                loss.backward()
                opt.step()
        return model.eval()
