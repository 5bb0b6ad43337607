"""``ssd``: Selective Synaptic Dampening, a retraining-free edit of the weights most specific to D_f.

Paper: Foster, Schoepf and Brintrup, "Fast Machine Unlearning Without Retraining Through Selective Synaptic
Dampening", AAAI 2024. Reference code: ``if-loops/selective-synaptic-dampening``, ``src/ssd.py::ParameterPerturber``
(``calc_importance``, ``modify_weight``) called from ``forget_*_strategies.py::ssd_tuning``.

Update rule. The importance of each parameter over a data set is the squared gradient of the mini-batch-mean
cross-entropy, averaged over the mini-batches (not a per-sample diagonal Fisher), with the model in eval mode:

    I(S) = (1 / #batches) * sum_batches (d CE_batch / d theta)^2

``I_D`` is computed once on the full training set D (``compute_train_stats``) and ``I_f`` on D_f. Then, for
every named parameter tensor (all of them, including biases and BatchNorm affine parameters):

    selected = I_f > alpha * I_D
    beta     = min((lambda * I_D / I_f) ** exponent, 1)
    theta[selected] *= beta[selected]

No training follows.

Hyperparameters:
- ``lambda`` = 1 (``dampening_constant``) and ``alpha`` = 10 (``selection_weighting``): the SSD ResNet-18 settings
  (ViT: alpha 5 for full-class, 25 for sub-class; PinsFaceRecognition: alpha 50, lambda 0.1).
- ``exponent`` = 1 (``parameters["exponent"]``); the cap 1 is the reference's misnamed ``lower_bound``.
- ``batch_size`` = 128: the batch of both importance passes (SSD ``-b`` default and its forget loader); part of
  ``train_stats_params`` because I_D depends on it.

Data needs: ``train_stats`` (I_D over D). D_f is always given; D_r is not used.

Decisions:
- [DECISION] D is traversed in its stored order and D_f in the order given, without shuffling, so I_D depends
  only on the model, the data and the batch size (it is cached per original model). SSD iterates
  ``ConcatDataset(retain, forget)`` unshuffled; only the batch boundaries differ.
- [DECISION] No augmentation is applied (SSD's unlearning transforms have none; muaudit data are never augmented
  outside training).
- [DECISION] beta is evaluated only at selected positions, where I_f > alpha * I_D >= 0, so there is no 0/0; a
  selected weight with I_D = 0 gets beta = 0.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from muaudit.base import MethodContext, MethodData, UnlearningMethod
from muaudit.data import Split
from muaudit.params import Interval, Param, Search
from muaudit.presets import preset_param


def importances(model: nn.Module, split: Split, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """SSD ``calc_importance``: squared mini-batch-mean CE gradients, averaged over batches (eval mode, CPU out)."""
    model.to(device).eval()
    imp = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    loss_fn = nn.CrossEntropyLoss()
    n_batches = 0
    for x, y in split.batches(batch_size):
        model.zero_grad(set_to_none=True)
        loss_fn(model(x.to(device)), y.to(device)).backward()
        for name, p in model.named_parameters():
            if p.grad is not None:
                imp[name] += p.grad.detach().pow(2)
        n_batches += 1
    model.zero_grad(set_to_none=True)
    return {name: (v / max(n_batches, 1)).cpu() for name, v in imp.items()}


@torch.no_grad()
def dampen(model: nn.Module, full: Mapping[str, torch.Tensor], forget: Mapping[str, torch.Tensor], alpha: float,
           dampening: float, exponent: float) -> dict[str, int]:
    """SSD ``modify_weight`` in place; returns the number of selected weights per parameter."""
    counts = {}
    for name, p in model.named_parameters():
        i_d, i_f = full[name].to(p.device), forget[name].to(p.device)
        selected = i_f > alpha * i_d
        beta = ((dampening * i_d[selected]) / i_f[selected]).pow(exponent).clamp(max=1.0)
        p[selected] = p[selected] * beta.to(p.dtype)
        counts[name] = int(selected.sum())
    return counts


PRESETS: dict[str, dict[str, object]] = {
    "paper": {"lambda": 1.0, "alpha": 10.0},
    "digits": {"lambda": 3.0, "alpha": 8.0},
    "digits-class": {"lambda": 1.0, "alpha": 30.0},
    "fmnist": {"lambda": 0.5, "alpha": 2.0},
    "fmnist-class": {"lambda": 1.0, "alpha": 60.0},
}


class SSD(UnlearningMethod):
    """Dampen the weights far more important to D_f than to D."""

    name = "ssd"
    summary = "Selective Synaptic Dampening: shrink weights whose D_f importance exceeds alpha x their D importance."
    paper = "Foster et al., Fast Machine Unlearning Without Retraining Through Selective Synaptic Dampening, AAAI 2024"
    needs = frozenset({"train_stats"})
    presets = PRESETS
    params = (
        preset_param(PRESETS),
        Param("lambda", float, 1.0, "dampening constant lambda", Interval(0, None, closed="neither"),
              search=Search(0.1, 10.0, log=True)),
        Param("alpha", float, 10.0, "selection weighting alpha: select where I_f > alpha * I_D", Interval(0, None),
              search=Search(1.0, 100.0, log=True)),
        Param("exponent", float, 1.0, "exponent of the dampening factor", Interval(0, None, closed="neither")),
        Param("batch_size", int, 128, "mini-batch size of both importance passes", Interval(1, None)),
    )

    def train_stats_params(self) -> dict[str, Any]:
        return {"batch_size": self.hparams["batch_size"], "importance": "squared-batch-mean-grad/eval"}

    def compute_train_stats(self, model: nn.Module, train: Split, ctx: MethodContext) -> dict[str, torch.Tensor]:
        return importances(model, train, self.hparams["batch_size"], ctx.device)

    def unlearn(self, model: nn.Module, data: MethodData, ctx: MethodContext) -> nn.Module:
        p = self.hparams
        full = data.train_stats
        forget = importances(model, data.forget, p["batch_size"], ctx.device)
        dampen(model, full, forget, p["alpha"], p["lambda"], p["exponent"])
        return model.eval()
