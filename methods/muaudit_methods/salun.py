"""``salun``: saliency unlearning, random-label unlearning restricted to the weights salient for D_f.

Paper: Fan, Liu, Zhang, Wei, Wong and Liu, "SalUn: Empowering Machine Unlearning via Gradient-based Weight
Saliency in Both Image Classification and Generation", ICLR 2024. Reference code:
``OPTML-Group/Unlearn-Saliency/Classification`` (``generate_mask.py::save_gradient_ratio``, ``unlearn/RL.py``,
``unlearn/impl.py``), including the fix of issue #32 / PR #33 (commit a6e89fd, 2026-02-28).

Update rule.
1. Saliency mask, model in eval mode, at the original weights theta_0:

       g = | sum_{forget batches} grad_theta [ -CE(f(x_f), y_f) ] |        (signed sum over batches, then abs)

   ranked globally over all named parameters (weights, biases, BatchNorm affine parameters together); the top
   ``mask_ratio`` fraction of entries get mask 1 (trainable), the rest 0 (``with_{ratio}.pt``).
2. Random-label unlearning (RL, as ``random-label``'s SalUn variants) where after each backward pass
   ``param.grad *= mask``, and after each optimiser step every masked-out entry is re-pinned to its value before
   unlearning and its SGD momentum buffer entry is zeroed. Without this re-pinning (the 2026 fix) weight decay and
   momentum move the "frozen" weights: masking the gradient alone does not stop ``wd * theta`` from being added.

Hyperparameters (defaults: the SalUn README example, ResNet-18 on CIFAR-10 with 10% random forgetting):
- ``mask_ratio`` = 0.5 (``with_0.5.pt``), ``lr`` = 0.013, ``epochs`` = 10; SGD with ``momentum`` = 0.9 and
  ``weight_decay`` = 5e-4, ``batch_size`` = 256 (``arg_parser`` defaults of ``iterative_unlearn``; its MultiStepLR
  milestones 91/136 never fire within 10 epochs, so the lr is constant).
- ``variant`` = "salun": the CIFAR-10/SVHN RL loop (each epoch: all forget batches with ``randint(0, K)`` labels,
  then all retain batches); "salun-shuffled" is the CIFAR-100/TinyImageNet loop (labels redrawn per epoch,
  D_f and D_r mixed and shuffled).

Data needs: the retain set.

Decisions:
- [DECISION] Mask gradients are all taken at theta_0 (``generate_mask.py`` at commit ac880a2: ``zero_grad`` and
  ``backward`` only). A later copy of ``save_gradient_ratio`` also calls ``optimizer.step()`` between batches,
  which moves the weights while the gradients are summed, and ranks the *smallest* |g| first; both are treated
  as bugs and not reproduced.
- [DECISION] D_f is traversed unshuffled for the mask (with equal batch sizes the signed sum of batch means does
  not depend on the order; only a ragged last batch weighs its examples differently).
- [DECISION] Ties in |g| at the threshold (common: dead units have exactly zero gradient) are broken by position
  in ``named_parameters`` order (stable sort), so the mask is deterministic; the reference's unstable
  ``argsort`` breaks them arbitrarily. Exactly ``int(N * mask_ratio)`` entries are kept, as in the reference.
- [DECISION] Re-pinning uses ``torch.where(mask, theta, theta_0)`` (bit-exact, also for non-finite values),
  equivalent to the reference's ``theta * m + theta_0 * (1 - m)``. BatchNorm running statistics are buffers,
  not parameters, and are updated in train mode as in the reference.
- [DECISION] With ``optimizer="adam"`` the masked-out entries of Adam's moment buffers are zeroed too.
"""
from __future__ import annotations

import torch
from torch import nn

from muaudit.base import MethodContext, MethodData, UnlearningMethod
from muaudit.data import Split
from muaudit.params import Choice, Interval, Param, Search
from muaudit.presets import preset_param
from muaudit_methods.random_label import OPTIMISER_PARAMS, resolve_settings, run_random_label

#: Optimiser settings of SalUn (README); ``None`` parameters fall back to these rather than to random-label's.
SALUN_DEFAULTS = {"optimizer": "sgd", "lr": 0.013, "epochs": 10, "batch_size": 256, "momentum": 0.9,
                  "weight_decay": 5e-4}


def saliency(model: nn.Module, forget: Split, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """``|sum over forget batches of grad of -CE|`` per named parameter, at the current weights, in eval mode."""
    model.to(device).eval()
    total = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    loss_fn = nn.CrossEntropyLoss()
    for x, y in forget.batches(batch_size):
        model.zero_grad(set_to_none=True)
        (-loss_fn(model(x.to(device)), y.to(device))).backward()
        for name, p in model.named_parameters():
            if p.grad is not None:
                total[name] += p.grad.detach()
    model.zero_grad(set_to_none=True)
    return {name: g.abs() for name, g in total.items()}


def top_fraction_mask(scores: dict[str, torch.Tensor], ratio: float) -> dict[str, torch.Tensor]:
    """Boolean masks selecting the ``int(N * ratio)`` largest scores over all tensors together (stable ties)."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    keep = int(flat.numel() * ratio)
    order = torch.sort(flat, descending=True, stable=True).indices[:keep]
    chosen = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    chosen[order] = True
    masks, start = {}, 0
    for name, s in scores.items():
        masks[name] = chosen[start:start + s.numel()].reshape(s.shape)
        start += s.numel()
    return masks


class MaskPinning:
    """Masks gradients and re-pins masked-out weights (and their optimiser state) after every step."""

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
        self.params = dict(model.named_parameters())
        self.masks = masks
        self.theta0 = {name: p.detach().clone() for name, p in self.params.items()}

    def mask_grads(self) -> None:
        for name, p in self.params.items():
            if p.grad is not None:
                p.grad.mul_(self.masks[name].to(p.grad.dtype))

    @torch.no_grad()
    def repin(self, opt: torch.optim.Optimizer) -> None:
        for name, p in self.params.items():
            mask = self.masks[name]
            if bool(mask.all()):
                continue
            p.copy_(torch.where(mask, p, self.theta0[name]))
            state = opt.state.get(p, {})
            for key in ("momentum_buffer", "exp_avg", "exp_avg_sq"):
                buf = state.get(key)
                if isinstance(buf, torch.Tensor):
                    buf.mul_(mask.to(buf.dtype))


#: Named presets; "paper" leaves the optimiser settings to SalUn's published CIFAR-10 values (SALUN_DEFAULTS).
PRESETS: dict[str, dict[str, object]] = {
    "paper": {"mask_ratio": 0.5},
    "digits": {"mask_ratio": 0.5, "lr": 0.01, "epochs": 10},
    "digits-class": {"mask_ratio": 0.67, "lr": 0.0167, "epochs": 8},
    "fmnist-class": {"mask_ratio": 0.5, "lr": 3e-3, "epochs": 3},
}


class SalUn(UnlearningMethod):
    """Random-label unlearning on the top ``mask_ratio`` most forget-salient weights only."""

    name = "salun"
    summary = "SalUn: random-label unlearning restricted to the weights with the largest forget-loss gradient."
    paper = "Fan et al., SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency, ICLR 2024"
    needs = frozenset({"retain"})
    presets = PRESETS
    params = (
        preset_param(PRESETS),
        Param("mask_ratio", float, 0.5, "fraction of all weights left trainable (global top |grad|)",
              Interval(0, 1, closed="right"), search=Search(0.1, 0.9)),
        Param("variant", str, "salun", "RL loop: salun (CIFAR-10: forget batches first) or salun-shuffled "
              "(CIFAR-100: mixed)", Choice(("salun", "salun-shuffled"))),
        *OPTIMISER_PARAMS,
    )

    def unlearn(self, model: nn.Module, data: MethodData, ctx: MethodContext) -> nn.Module:
        hp = self.hparams.as_dict()
        hp.update({k: v for k, v in SALUN_DEFAULTS.items() if hp[k] is None})
        settings = resolve_settings(hp)
        masks = top_fraction_mask(saliency(model, data.forget, settings.batch_size, ctx.device), hp["mask_ratio"])
        pin = MaskPinning(model, masks)
        return run_random_label(model, data.forget, data.retain, settings, ctx,
                                after_backward=pin.mask_grads, after_step=pin.repin)
