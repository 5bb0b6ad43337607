"""Vectorised training: many small models of one architecture trained at once with ``torch.func`` + ``vmap``.

The parameters of a chunk of models are stacked (:func:`torch.func.stack_module_state`), the forward pass is
``vmap`` over :func:`torch.func.functional_call`, one backward pass of the summed per-model losses gives every
model its own gradient (the models share no parameters), and the optimiser update is applied to the stacked
tensors. Each model keeps what :func:`muaudit.training.fit` would give it:

- its own data subset, and its own data order and augmentation from its own generator: per epoch
  ``torch.randperm(n_m, generator=gen)`` (as :meth:`Split.batches` draws it), then per batch
  :func:`~muaudit.training.augment_batch` on that batch with the same generator, in the same order;
- mini-batches of the recipe's size and a smaller last batch; models with different subset sizes have different
  numbers of batches per epoch, so batches are padded and the cross-entropy is a masked mean over the model's
  real examples, and a model without a batch at a step is left untouched (parameters and optimiser state, by
  ``torch.where`` on a per-model active mask);
- the recipe's learning-rate schedule per epoch and the update rule of ``torch.optim.SGD`` (momentum, weight
  decay, first-step buffer = gradient, no dampening, no Nesterov) or ``torch.optim.Adam`` (per-model step
  counts and bias corrections, weight decay added to the gradient, no AMSGrad), written out op by op as the
  single-tensor (CPU) implementations compute them.

What is exact and what is not: initialisation, data order, augmentation and the learning-rate schedule are
identical to sequential training, bit for bit. The arithmetic is not: batched kernels (batched matmul, grouped
convolution) and the masked mean sum in a different order than the per-model kernels, so weights agree with
:func:`~muaudit.training.train_from_scratch` only up to float rounding, and those rounding differences can grow
over training (the tests bound them on digits). Models with BatchNorm (running statistics updated in place) or
dropout (per-call randomness: vmap would need ``randomness="different"``, and the draws could not match the
sequential ones) are not vectorised: :func:`can_vectorise` says so, and callers train them sequentially.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from muaudit.data import DataBundle, Split
from muaudit.task import Recipe, Task
from muaudit.training import augment_batch, derive_seed, fresh_model, generator, lr_factor, progress_bar

# Modules whose training-mode forward is not a pure function of (parameters, buffers, input): running statistics
# updated in place (BatchNorm, tracked InstanceNorm) or fresh random draws per call (dropout family).
_NOT_VECTORISABLE: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase, nn.modules.dropout._DropoutNd)

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which muaudit.training.make_optimizer uses
ADAM_EPS = 1e-8


def can_vectorise(model: nn.Module, example: torch.Tensor | None = None) -> bool:
    """Whether ``model`` can be trained by :func:`fit_vectorised` with the semantics of sequential training.

    False for BatchNorm/InstanceNorm (running statistics) and dropout (randomness) layers. With an ``example``
    input batch, a vmapped forward pass of two stacked copies must also run and agree with the plain forward
    (this catches other operations that vmap cannot batch).
    """
    if any(isinstance(module, _NOT_VECTORISABLE) for module in model.modules()):
        return False
    if example is None:
        return True
    probe = copy.deepcopy(model).cpu().train()
    x = example[:2].detach().cpu()
    params, buffers = stack_module_state([probe, probe])
    base = copy.deepcopy(probe).to("meta")
    try:
        with torch.no_grad():
            forward = vmap(lambda p, b, xx: functional_call(base, (p, b), (xx,)))
            batched = forward(params, buffers, x.expand(2, *x.shape))
            plain = probe(x)
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return False
    return bool(torch.allclose(batched[0], plain, rtol=1e-4, atol=1e-5))


def worth_vectorising(model: nn.Module, device: torch.device) -> bool:
    """Whether vectorised training is expected to beat sequential training of ``model`` on ``device``.

    On the CPU, vmapped convolutions become grouped convolutions, which oneDNN runs slowly, and sequential CNN
    training is already compute-bound: measured with ``reports/scripts/bench_vectorised.py`` on a 2-core CPU (one
    thread; ``reports/shadows/README.md``), the zoo's ``cnn`` on Fashion-MNIST trained at 0.3-0.4x the sequential
    throughput (sequential: 76 GFLOP/s), while the MLP on digits trained at 15-18x. So on the CPU only
    convolution-free models are worth it; on CUDA every vectorisable model is (the standard ``torch.func``
    model-ensembling case; not measured here).
    """
    if not can_vectorise(model):
        return False
    if device.type == "cpu":
        return not any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    return True


def train_vectorised(task: Task, data: DataBundle, pool: Split, subsets: Sequence[np.ndarray], seeds: Sequence[int],
                     device: torch.device, chunk: int = 32, progress: str | None = None) -> list[nn.Module]:
    """Model ``i`` as ``train_from_scratch(task, data, pool.subset(subsets[i]), seeds[i], device)`` trains it.

    Same initialisation (``derive_seed(seed, "init")``) and data order (``derive_seed(seed, "order")``); weights
    equal the sequential ones up to float rounding (see the module docstring).
    """
    if len(subsets) != len(seeds):
        raise ValueError(f"got {len(subsets)} subsets for {len(seeds)} seeds")
    models = [fresh_model(task, data, derive_seed(seed, "init")) for seed in seeds]
    orders = [derive_seed(seed, "order") for seed in seeds]
    return fit_vectorised(models, pool, subsets, task.recipe, orders, device, chunk, progress)


def fit_vectorised(models: Sequence[nn.Module], pool: Split, subsets: Sequence[np.ndarray], recipe: Recipe,
                   seeds: Sequence[int | torch.Generator], device: torch.device, chunk: int = 32,
                   progress: str | None = None) -> list[nn.Module]:
    """Train each ``models[i]`` as ``fit(models[i], pool.subset(subsets[i]), recipe, seeds[i], device)`` would.

    Models are processed ``chunk`` at a time (memory grows with the chunk); the trained weights are copied back
    into the given modules, which are returned in eval mode on ``device``.
    """
    if not (len(models) == len(subsets) == len(seeds)):
        raise ValueError(f"got {len(models)} models, {len(subsets)} subsets and {len(seeds)} seeds")
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    index_sets = [_checked_subset(s, len(pool)) for s in subsets]
    _check_same_architecture(models)
    total = sum(recipe.epochs * math.ceil(len(s) / recipe.batch_size) for s in index_sets)
    with progress_bar(total, progress) as bar:
        for start in range(0, len(models), chunk):
            stop = start + chunk
            _fit_chunk(list(models[start:stop]), pool, index_sets[start:stop], recipe, list(seeds[start:stop]),
                       device, bar)
    return [model.eval() for model in models]


def _checked_subset(subset: np.ndarray, n_pool: int) -> torch.Tensor:
    array = np.asarray(subset)
    if array.ndim != 1 or len(array) == 0 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError("every subset must be a non-empty 1-D array of integer indices")
    if array.min() < 0 or array.max() >= n_pool:
        raise ValueError(f"subset indices must lie in [0, {n_pool})")
    return torch.from_numpy(array.astype(np.int64))


def _check_same_architecture(models: Sequence[nn.Module]) -> None:
    if not models:
        return
    shapes = {k: tuple(v.shape) for k, v in models[0].state_dict().items()}
    for model in models:
        if not can_vectorise(model):
            raise ValueError(f"{type(model).__name__} has BatchNorm or dropout layers and cannot be vectorised")
        if {k: tuple(v.shape) for k, v in model.state_dict().items()} != shapes:
            raise ValueError("vectorised training needs models of one architecture")


def _fit_chunk(models: list[nn.Module], pool: Split, subsets: list[torch.Tensor], recipe: Recipe,
               seeds: list[int | torch.Generator], device: torch.device, bar: object) -> None:
    for model in models:
        model.to(device).train()
    stacked, buffers = stack_module_state(models)
    params = {k: v.detach() for k, v in stacked.items()}
    buffers = {k: v.detach() for k, v in buffers.items()}
    base = copy.deepcopy(models[0]).to("meta")
    gens = [s if isinstance(s, torch.Generator) else generator(s) for s in seeds]
    step_grads = _gradient_fn(base)
    update = _SGD(recipe) if recipe.optimizer == "sgd" else _Adam(recipe, len(models))
    x_pool, y_pool = pool.x, pool.y
    for epoch in range(recipe.epochs):
        lr = recipe.lr * lr_factor(recipe, epoch)
        order = _epoch_order(subsets, gens, recipe.batch_size)
        for step in range(order.shape[1] // recipe.batch_size):
            idx = order[:, step * recipe.batch_size:(step + 1) * recipe.batch_size]
            mask = idx >= 0
            counts = mask.sum(1)
            width = int(counts.max())
            idx, mask = idx[:, :width], mask[:, :width]
            x = _batch_inputs(x_pool, idx, counts, recipe.augment, gens, device)
            y = y_pool[idx.clamp(min=0)].to(device)
            weight = (mask.float() / counts.clamp(min=1).float()[:, None]).to(device)
            grads = step_grads(params, buffers, x, y, weight)
            with torch.no_grad():
                params = update(params, grads, (counts > 0).to(device), lr)
            bar.update(int((counts > 0).sum()))  # type: ignore[attr-defined]
    with torch.no_grad():
        for m, model in enumerate(models):
            for name, tensor in model.named_parameters():
                tensor.copy_(params[name][m])


def _gradient_fn(base: nn.Module) -> Callable[..., dict[str, torch.Tensor]]:
    """Every model's gradient of its cross-entropy averaged over its real examples (``weight`` = mask / count).

    The forward pass is vmapped over the stacked parameters; the models are independent, so one backward pass
    of the summed losses gives each model its own gradient (measured faster on the CPU than ``vmap(grad(...))``).
    """
    forward = vmap(lambda p, b, x: functional_call(base, (p, b), (x,)))

    def gradients(params: Mapping[str, torch.Tensor], buffers: Mapping[str, torch.Tensor], x: torch.Tensor,
                  y: torch.Tensor, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
        with torch.enable_grad():
            logits = forward(leaves, dict(buffers), x)
            losses = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
            grads = torch.autograd.grad((losses * weight.flatten()).sum(), list(leaves.values()))
        return dict(zip(leaves, grads))

    return gradients


def _epoch_order(subsets: list[torch.Tensor], gens: list[torch.Generator], batch_size: int) -> torch.Tensor:
    """Pool indices in each model's order for one epoch, ``-1``-padded to a common number of batches."""
    steps = max(math.ceil(len(s) / batch_size) for s in subsets)
    order = torch.full((len(subsets), steps * batch_size), -1, dtype=torch.int64)
    for m, (subset, gen) in enumerate(zip(subsets, gens)):
        order[m, :len(subset)] = subset[torch.randperm(len(subset), generator=gen)]
    return order


def _batch_inputs(x_pool: torch.Tensor, idx: torch.Tensor, counts: torch.Tensor, augment: str,
                  gens: list[torch.Generator], device: torch.device) -> torch.Tensor:
    """The ``(M, width, ...)`` inputs of one step; padding rows are zeros (their loss weight is zero)."""
    x = x_pool[idx.clamp(min=0)].to(device)
    if augment == "none" or x_pool.dim() != 4:
        return x
    out = torch.zeros_like(x)
    for m, count in enumerate(counts.tolist()):  # each model's draws from its own generator, as fit makes them
        if count:
            out[m, :count] = augment_batch(x[m, :count], augment, gens[m])
    return out


def _where(active: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new`` for active models, ``old`` for the others."""
    if bool(active.all()):
        return new
    return torch.where(active.view(-1, *([1] * (new.dim() - 1))), new, old)


class _SGD:
    """``torch.optim.SGD`` (single-tensor path, dampening 0, no Nesterov) on stacked parameters."""

    def __init__(self, recipe: Recipe) -> None:
        self.momentum, self.weight_decay = recipe.momentum, recipe.weight_decay
        self.buffers: dict[str, torch.Tensor] | None = None

    def __call__(self, params: dict[str, torch.Tensor], grads: Mapping[str, torch.Tensor], active: torch.Tensor,
                 lr: float) -> dict[str, torch.Tensor]:
        first = self.buffers is None
        if first and not bool(active.all()):
            raise RuntimeError("every model must take the first step")  # subsets are non-empty, so this holds
        new_buffers: dict[str, torch.Tensor] = {}
        out = {}
        for name, p in params.items():
            g = grads[name]
            if self.weight_decay != 0:
                g = g.add(p, alpha=self.weight_decay)
            if self.momentum != 0:
                if first:
                    g = g.clone()
                else:
                    old = self.buffers[name]  # type: ignore[index]
                    g = _where(active, old.mul(self.momentum).add_(g, alpha=1.0), old)
                new_buffers[name] = g
            out[name] = _where(active, p.add(g, alpha=-lr), p)
        self.buffers = new_buffers
        return out


class _Adam:
    """``torch.optim.Adam`` (single-tensor path, default betas and eps, no AMSGrad) with per-model step counts."""

    def __init__(self, recipe: Recipe, n_models: int) -> None:
        self.weight_decay = recipe.weight_decay
        self.steps = [0] * n_models
        self.exp_avg: dict[str, torch.Tensor] = {}
        self.exp_avg_sq: dict[str, torch.Tensor] = {}

    def __call__(self, params: dict[str, torch.Tensor], grads: Mapping[str, torch.Tensor], active: torch.Tensor,
                 lr: float) -> dict[str, torch.Tensor]:
        beta1, beta2 = ADAM_BETAS
        flags = active.tolist()
        self.steps = [s + int(a) for s, a in zip(self.steps, flags)]
        # as torch computes them: Python floats (double), used as float32 scalars by the kernels
        step_size = [-(lr / (1 - beta1 ** float(s))) if s else 0.0 for s in self.steps]
        bc2_sqrt = [(1 - beta2 ** float(s)) ** 0.5 if s else 1.0 for s in self.steps]
        out = {}
        for name, p in params.items():
            shape = (-1, *([1] * (p.dim() - 1)))
            size = torch.tensor(step_size, dtype=p.dtype, device=p.device).view(shape)
            root = torch.tensor(bc2_sqrt, dtype=p.dtype, device=p.device).view(shape)
            g = grads[name]
            if self.weight_decay != 0:
                g = g.add(p, alpha=self.weight_decay)
            m = self.exp_avg.get(name, torch.zeros_like(p))
            v = self.exp_avg_sq.get(name, torch.zeros_like(p))
            m_new = m.lerp(g, 1 - beta1)
            v_new = v.mul(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v_new.sqrt() / root).add_(ADAM_EPS)
            self.exp_avg[name] = _where(active, m_new, m)
            self.exp_avg_sq[name] = _where(active, v_new, v)
            out[name] = _where(active, p + size * m_new / denom, p)
        return out
