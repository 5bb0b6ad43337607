"""``bad-teacher``: distil from a competent teacher on D_r and from an incompetent one on D_f (blindspot).

Paper: Chundawat, Tarun, Mandal and Kankanhalli, "Can Bad Teaching Induce Forgetting? Unlearning in Deep
Networks Using an Incompetent Teacher", AAAI 2023. Reference code: ``vikram2000b/bad-teaching-unlearning``
(``unlearn.py::UnlearnerLoss``, ``blindspot_unlearner``), copied into SSD ``src/unlearn.py`` and called from
``forget_*_strategies.py::blindspot``.

Update rule. Teachers: the competent teacher is a frozen copy of the original model; the incompetent teacher is
the task's architecture freshly initialised (``ctx.fresh_model``), never trained; both in eval mode. The student
is the given model. Data: D_f (l = 1) together with a uniformly random ``retain_fraction`` of D_r (l = 0),
shuffled. For each batch, with temperature T:

    u = softmax(incompetent(x) / T),  c = softmax(competent(x) / T)
    target = l * u + (1 - l) * c
    loss = KL(target || softmax(student(x) / T))      # F.kl_div(log_softmax(student(x)/T), target)

There is no T^2 factor (unlike SCRUB's DistillKL).

Hyperparameters (defaults: the official code as run by SSD for ResNet-18):
- ``lr`` = 1e-4 (Adam, no weight decay), ``epochs`` = 1, ``temperature`` = 1, ``batch_size`` = 256 (SSD uses 128
  for ViT only), ``retain_fraction`` = 0.3 (``random.sample(retain, int(0.3 * len(retain)))``).
- ``kl_reduction`` = "mean" (default) or "batchmean".

Data needs: the retain set.

Decisions:
- [DECISION] ``kl_reduction``: the official code calls ``F.kl_div`` with its default ``reduction='mean'``, which
  averages over the B*K elements, i.e. the per-example KL divided by the number of classes K; NatMU's port uses
  ``'batchmean'`` (the true per-example KL) and retunes T = 7.2. The default is ``'mean'``, because every
  published Bad Teacher number and its lr (1e-4) were obtained with it. The choice matters less than it seems:
  the two losses differ by the constant factor K, and Adam is invariant to a constant scale of the loss up to its
  epsilon (1e-8), so with the default optimiser both reductions give nearly the same updates; the difference
  shows only in the loss values and when the gradients approach epsilon.
- [DECISION] The student trains in train mode (the SSD copy never switches it, and a freshly loaded network is
  in train mode); the teachers are in eval mode, as in ``blindspot_unlearner``.
- [DECISION] The incompetent teacher's initialisation seed is derived from the run seed (label
  ``INCOMPETENT_SEED_LABEL``), so it changes with the seed and is reproducible.
- [DECISION] The retain subset is drawn once per run from ``ctx.generator`` (SSD: ``random.sample`` once).
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn import functional as F

from muaudit.base import MethodContext, MethodData, UnlearningMethod
from muaudit.data import Split
from muaudit.params import Choice, Interval, Param, Search
from muaudit.presets import preset_param
from muaudit.training import derive_seed, progress_bar

#: Label from which the incompetent teacher's initialisation seed is derived: derive_seed(ctx.seed, label).
INCOMPETENT_SEED_LABEL = "incompetent-teacher"


def incompetent_teacher_seed(seed: int) -> int:
    """The initialisation seed of the incompetent teacher for run seed ``seed``."""
    return derive_seed(seed, INCOMPETENT_SEED_LABEL)


def unlearner_loss(student_logits: torch.Tensor, is_forget: torch.Tensor, competent_logits: torch.Tensor,
                   incompetent_logits: torch.Tensor, temperature: float, reduction: str) -> torch.Tensor:
    """The official ``UnlearnerLoss``: KL from the per-example teacher mixture to the student."""
    l = is_forget.to(student_logits.dtype).unsqueeze(1)
    target = l * F.softmax(incompetent_logits / temperature, dim=1) + (1 - l) * F.softmax(
        competent_logits / temperature, dim=1)
    total = F.kl_div(F.log_softmax(student_logits / temperature, dim=1), target, reduction="sum")
    # 'mean' divides by every element (B * K), 'batchmean' by the batch size B (spelled out to avoid torch's
    # deprecation warning for reduction='mean', whose meaning is the one reproduced here)
    return total / (target.numel() if reduction == "mean" else target.shape[0])


def unlearning_data(forget: Split, retain: Split, fraction: float, gen: torch.Generator) -> tuple[Split, torch.Tensor]:
    """D_f plus a random ``fraction`` of D_r, and the forget flags (1 = forget, 0 = retain)."""
    n_keep = int(fraction * len(retain))
    kept = retain.subset(torch.randperm(len(retain), generator=gen)[:n_keep])
    combined = Split(torch.cat([forget.x, kept.x]), torch.cat([forget.y, kept.y]))
    flags = torch.cat([torch.ones(len(forget), dtype=torch.int64), torch.zeros(n_keep, dtype=torch.int64)])
    return combined, flags


PRESETS: dict[str, dict[str, object]] = {
    "paper": {"lr": 1e-4, "epochs": 1, "temperature": 1.0},
    "digits": {"lr": 1e-3, "epochs": 10, "temperature": 1.0},
    "digits-class": {"lr": 1e-3, "epochs": 4, "temperature": 1.0},
    "fmnist": {"lr": 1e-3, "epochs": 5, "temperature": 1.0},
    "fmnist-class": {"lr": 1e-3, "epochs": 2, "temperature": 1.0},
}


class BadTeacher(UnlearningMethod):
    """Student distils the incompetent teacher on D_f and the original model on part of D_r."""

    name = "bad-teacher"
    summary = "Bad Teacher / blindspot: KL distillation from a random teacher on D_f, the original on D_r."
    paper = "Chundawat et al., Can Bad Teaching Induce Forgetting?, AAAI 2023"
    needs = frozenset({"retain"})
    presets = PRESETS
    params = (
        preset_param(PRESETS),
        Param("lr", float, 1e-4, "Adam learning rate", Interval(0, None, closed="neither"),
              search=Search(1e-5, 0.1, log=True)),
        Param("epochs", int, 1, "epochs over the unlearning data", Interval(1, None), search=Search(1, 10)),
        Param("batch_size", int, 256, "mini-batch size", Interval(1, None)),
        Param("temperature", float, 1.0, "KL temperature T", Interval(0, None, closed="neither"),
              search=Search(0.5, 4.0, log=True)),
        Param("retain_fraction", float, 0.3, "fraction of D_r drawn into the unlearning data", Interval(0, 1)),
        Param("kl_reduction", str, "mean", "'mean' (official: per-example KL / K) or 'batchmean' (NatMU)",
              Choice(("mean", "batchmean"))),
    )

    def unlearn(self, model: nn.Module, data: MethodData, ctx: MethodContext) -> nn.Module:
        p = self.hparams
        model.to(ctx.device)
        competent = copy.deepcopy(model).eval().requires_grad_(False)
        incompetent = ctx.fresh_model(incompetent_teacher_seed(ctx.seed)).to(ctx.device).eval().requires_grad_(False)
        combined, flags = unlearning_data(data.forget, data.retain, p["retain_fraction"], ctx.generator("retain-subset"))
        if len(combined) == 0:
            return model.eval()
        opt = torch.optim.Adam(model.parameters(), lr=p["lr"])
        gen = ctx.generator("order")
        model.train()
        with progress_bar(p["epochs"] * math.ceil(len(combined) / p["batch_size"]), ctx.progress) as bar:
            for _ in range(p["epochs"]):
                order = torch.randperm(len(combined), generator=gen)
                for start in range(0, len(combined), p["batch_size"]):
                    idx = order[start:start + p["batch_size"]]
                    x, l = combined.x[idx].to(ctx.device), flags[idx].to(ctx.device)
                    with torch.no_grad():
                        c_logits, u_logits = competent(x), incompetent(x)
                    loss = unlearner_loss(model(x), l, c_logits, u_logits, p["temperature"], p["kl_reduction"])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    bar.update(1)
        return model.eval()
