"""``eu-k`` and ``cf-k``: retrain or fine-tune only the last k layers on D_r (Goel et al.'s baselines).

Paper: Goel, Prabhu and Kumaraguru, "Evaluating Inexact Unlearning Requires Revisiting Forgetting" (arXiv
2201.06640, 2022; PGU's reference [13]). Used as a baseline by PGU (Hoang et al., WACV 2024, Tables 1-3, as
"EUk") and SCRUB (Kurmanji et al., NeurIPS 2023).
Reference code: SCRUB's ``meghdadk/SCRUB/MIA_experiments.ipynb`` (``euk_unlearn``, ``cfk_unlearn``,
``fk_fientune``).

Update rules. Let ``L_1 .. L_n`` be the model's parameterised layers, counted as every ``nn.Linear`` and
convolution (``nn.Conv1d/2d/3d``) in module registration order, each together with the normalisation layers
(BatchNorm and any other parameterised non-Linear/Conv module) registered after it and before the next
Linear/Conv. The last ``k`` layers are ``T = {L_{n-k+1} .. L_n}``; everything else is frozen::

    EU-k:  theta_T <- theta_T^fresh  (a fresh initialisation of the architecture);  train theta_T on D_r
    CF-k:  train theta_T on D_r starting from the original weights
    both:  minimise CE(f(x), y) over D_r w.r.t. theta_T only; theta_{not T} and the running statistics of
           frozen normalisation layers stay bit-identical

Hyperparameters:

- ``k`` = 3 for both: PGU's footnote 6 ("We retrain the last 3 convolutional/linear layers") for EU-k; CF-k uses
  the same k so the pair is comparable. (SCRUB's notebook picks blocks by hand instead: AllCNN ``features[9]``,
  ResNet ``layer4``.) With the two-hidden-layer digits MLP, k = 3 covers every layer, so EU-k is a full retrain
  with the task recipe (another draw of the gold model) and CF-k is a full fine-tune; use k = 1 or 2 there.
- EU-k training: the task's own recipe (``ctx.recipe``: optimiser, lr, momentum, weight decay, schedule,
  augmentation, batch size, epochs). EU-k is "exact unlearning" of the last k layers, i.e. a partial retrain,
  so it uses the procedure that trained the original (Goel et al.; SCRUB's ``euk_unlearn`` sets
  ``euk_epochs = training_epochs``). ``epochs``, ``lr`` and ``batch_size`` override the recipe when given
  (default ``none`` = the recipe's value); the schedule is then computed over the overridden epochs.
- CF-k training: SCRUB's ``cfk_unlearn``: SGD lr 0.01, 10 epochs, batch 64, **no momentum, no weight decay**
  (``torch.optim.SGD(params, lr=lr, weight_decay=0.0)``); its lr decay epochs [10, 15, 20] never fire within
  10 epochs, so the learning rate is constant.

Data needs: the retain set.

Decisions and deviations:

- [DECISION] Fresh parameters for EU-k come from ``ctx.fresh_model(derive_seed(ctx.seed, "init"))`` (the same
  seed label ``retrain`` uses); the re-initialised layers' parameters **and buffers** (BatchNorm running
  statistics and counters) are copied from it, so the initialisation is the architecture's own initialiser.
- [DECISION] Frozen normalisation layers run in eval mode during training (their running statistics are frozen
  too); trained layers and everything stateless (dropout) run in train mode. SCRUB's code calls ``model.train()``
  on the whole model, so the running statistics of "frozen" BatchNorm layers drift on D_r: not reproduced.
- [DECISION] The optimiser receives only the trained parameters, so weight decay and momentum cannot move frozen
  weights (the failure mode of SalUn issue #32).
- [DECISION] Layers are ordered by module registration, not by the forward graph. In the zoo's ResNet-18 the
  projection shortcut of a stage's first block is registered after that block's two convolutions, so it counts
  as "later" than them; every other zoo architecture registers modules in forward order.
- [DECISION] CF-k, like ``finetune``, uses no data augmentation; EU-k uses the recipe's augmentation.
- ``k`` larger than the number of layers is a parameter error.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from muaudit.base import MethodContext, MethodData, UnlearningMethod
from muaudit.data import Split
from muaudit.errors import ParameterError
from muaudit.params import Interval, Param, Search
from muaudit.presets import preset_param
from muaudit.task import Recipe
from muaudit.training import derive_seed, fit

_COUNTED = (nn.Linear, nn.modules.conv._ConvNd)


def layer_groups(model: nn.Module) -> list[tuple[str, ...]]:
    """Module names of each parameterised layer (a Linear/Conv and the parameterised modules after it)."""
    groups: list[list[str]] = []
    for name, module in model.named_modules():
        if isinstance(module, _COUNTED):
            groups.append([name])
        elif groups and _has_own_state(module):
            groups[-1].append(name)
    return [tuple(g) for g in groups]


def _has_own_state(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))


def last_layers(model: nn.Module, k: int, owner: str) -> list[str]:
    """Names of the modules forming the last ``k`` layers; a :class:`ParameterError` if there are fewer."""
    groups = layer_groups(model)
    if k > len(groups):
        raise ParameterError(f"The 'k' parameter of {owner} is {k}, but the model has only {len(groups)} "
                             f"Linear/Conv layers.")
    return [name for group in groups[len(groups) - k:] for name in group]


@torch.no_grad()
def reinitialise(model: nn.Module, fresh: nn.Module, names: list[str]) -> None:
    """Copy the parameters and buffers of modules ``names`` from ``fresh`` (same architecture) into ``model``."""
    for name in names:
        target, source = model.get_submodule(name), fresh.get_submodule(name)
        own = dict(source.named_parameters(recurse=False)) | dict(source.named_buffers(recurse=False))
        for key, tensor in list(target.named_parameters(recurse=False)) + list(target.named_buffers(recurse=False)):
            tensor.copy_(own[key])


def train_layers(model: nn.Module, names: list[str], split: Split, recipe: Recipe, gen: torch.Generator,
                 device: torch.device, progress: str | None = None) -> nn.Module:
    """Train only the modules ``names`` on ``split`` with ``recipe`` (CE); everything else stays bit-identical."""
    chosen = set(names)
    trained = [p for name in names for p in model.get_submodule(name).parameters(recurse=False)]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trained:
        p.requires_grad_(True)
    frozen_norms = [module for name, module in model.named_modules()
                    if name not in chosen and isinstance(module, nn.modules.batchnorm._NormBase)]
    fit(model, split, recipe, gen, device, progress, parameters=trained, keep_eval=frozen_norms)
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


EUK_PRESETS: dict[str, dict[str, object]] = {
    "paper": {"k": 3},
    "digits": {"k": 2, "epochs": 12},
    "digits-class": {"k": 2, "epochs": 12},
    "fmnist": {"k": 2, "epochs": 10},
    "fmnist-class": {"k": 2, "epochs": 10},
}
CFK_PRESETS: dict[str, dict[str, object]] = {
    "paper": {"k": 3, "epochs": 10, "lr": 0.01},
    "digits": {"k": 3, "epochs": 20, "lr": 0.5},
    "digits-class": {"k": 2, "epochs": 30, "lr": 0.3},
    "fmnist": {"k": 3, "epochs": 10, "lr": 0.1},
    "fmnist-class": {"k": 2, "epochs": 10, "lr": 0.1},
}


class EUk(UnlearningMethod):
    """Exact unlearning of the last k layers: re-initialise them and retrain them alone on D_r."""

    name = "eu-k"
    summary = "EU-k: re-initialise the last k Linear/Conv layers and retrain only them on D_r (task recipe)."
    paper = ("Goel et al., Evaluating Inexact Unlearning Requires Revisiting Forgetting, 2022 (EU-k); "
             "k = 3 as in PGU (Hoang et al., WACV 2024)")
    needs = frozenset({"retain"})
    presets = EUK_PRESETS
    params = (
        preset_param(EUK_PRESETS),
        Param("k", int, 3, "number of last Linear/Conv layers to re-initialise and retrain", Interval(1, None),
              search=Search(1, 3)),
        Param("epochs", int, None, "training epochs (none = the task recipe's)", Interval(1, None), nullable=True,
              search=Search(1, 30)),
        Param("lr", float, None, "base learning rate (none = the task recipe's)",
              Interval(0, None, closed="neither"), nullable=True, search=Search(1e-3, 0.5, log=True)),
        Param("batch_size", int, None, "mini-batch size (none = the task recipe's)", Interval(1, None),
              nullable=True),
    )

    def recipe(self, base: Recipe) -> Recipe:
        p = self.hparams
        overrides = {key: p[key] for key in ("epochs", "lr", "batch_size") if p[key] is not None}
        return replace(base, **overrides)

    def unlearn(self, model: nn.Module, data: MethodData, ctx: MethodContext) -> nn.Module:
        names = last_layers(model, self.hparams["k"], self.display_name())
        fresh = ctx.fresh_model(derive_seed(ctx.seed, "init"))
        reinitialise(model, fresh.to(ctx.device), names)
        del fresh
        return train_layers(model, names, data.retain, self.recipe(ctx.recipe), ctx.generator("order"),
                            ctx.device, ctx.progress)


class CFk(UnlearningMethod):
    """Catastrophic forgetting of the last k layers: fine-tune only them on D_r."""

    name = "cf-k"
    summary = "CF-k: fine-tune only the last k Linear/Conv layers on D_r (SCRUB's recipe)."
    paper = ("Goel et al., Evaluating Inexact Unlearning Requires Revisiting Forgetting, 2022 (CF-k); "
             "recipe from SCRUB's MIA_experiments notebook")
    needs = frozenset({"retain"})
    presets = CFK_PRESETS
    params = (
        preset_param(CFK_PRESETS),
        Param("k", int, 3, "number of last Linear/Conv layers to fine-tune", Interval(1, None), search=Search(1, 3)),
        Param("epochs", int, 10, "epochs over D_r", Interval(1, None), search=Search(1, 30)),
        Param("lr", float, 0.01, "SGD learning rate", Interval(0, None, closed="neither"),
              search=Search(1e-3, 0.5, log=True)),
        Param("batch_size", int, 64, "mini-batch size", Interval(1, None)),
        Param("momentum", float, 0.0, "SGD momentum (none in SCRUB's code)", Interval(0, 1, closed="left")),
        Param("weight_decay", float, 0.0, "SGD weight decay (none in SCRUB's code)", Interval(0, None)),
    )

    def unlearn(self, model: nn.Module, data: MethodData, ctx: MethodContext) -> nn.Module:
        p = self.hparams
        names = last_layers(model, p["k"], self.display_name())
        recipe = Recipe(epochs=p["epochs"], batch_size=p["batch_size"], optimizer="sgd", lr=p["lr"],
                        momentum=p["momentum"], weight_decay=p["weight_decay"], schedule="constant",
                        augment="none")
        return train_layers(model, names, data.retain, recipe, ctx.generator("order"), ctx.device, ctx.progress)
