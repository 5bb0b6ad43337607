"""MU-Mis: the double-backprop loss is exact, the input sensitivity of the forget class drops, the stopping rule."""
from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
from torch import nn

from muaudit.audit import AuditSetup, method_context
from muaudit.base import MethodData
from muaudit.errors import MuauditError
from muaudit.readouts import accuracy
from muaudit.testing import check_method, load_method
from muaudit_methods.mu_mis import input_sensitivity, mis_loss


def run_direct(setup: AuditSetup, params: dict[str, Any], seed: int = 0) -> tuple[Any, nn.Module]:
    """Run MU-Mis on a copy of the original and return (the method instance with its diagnostics, the model)."""
    method = load_method("mu-mis").cls(**params)
    model = method.unlearn(copy.deepcopy(setup.original), MethodData("mu-mis", setup.forget),
                           method_context(setup, seed, None))
    return method, model


def sensitivities(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, ...]:
    """Per-sample ``||grad_x f_y||^2`` and the mean over ``c' != y`` of ``||grad_x f_c'||^2`` (raw [0,1] input)."""
    model.eval()
    norms = []
    for c in range(n_classes):
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xr)[:, c].sum(), xr)
        norms.append(g.pow(2).flatten(1).sum(1))
    table = torch.stack(norms, 1)  # (N, C)
    own = table.gather(1, y.view(-1, 1)).squeeze(1)
    others = (table.sum(1) - own) / (n_classes - 1)
    return own, others


@pytest.fixture(scope="module")
def class_run(digits_class_setup):
    return run_direct(digits_class_setup, {"preset": "digits-class"})


# ------------------------------------------------------------------------------ the loss itself
def _tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 4)).double()


def test_input_sensitivity_matches_finite_differences():
    net = _tiny_mlp()
    x = torch.randn(6, 5, dtype=torch.float64)
    classes = torch.tensor([0, 1, 2, 3, 1, 0])
    z = x.clone().requires_grad_(True)
    got = input_sensitivity(net, z, classes, create_graph=False)
    h = 1e-6
    for i in range(len(x)):
        grad = torch.zeros(5, dtype=torch.float64)
        for d in range(5):
            step = torch.zeros(5, dtype=torch.float64)
            step[d] = h
            with torch.no_grad():
                grad[d] = (net(x[i] + step)[classes[i]] - net(x[i] - step)[classes[i]]) / (2 * h)
        assert got[i].item() == pytest.approx(grad.pow(2).sum().item(), rel=1e-6)


def test_batched_loss_equals_per_sample_loop_and_its_weight_gradient_is_exact():
    net = _tiny_mlp()
    x = torch.randn(6, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 1, 0])
    other = torch.tensor([1, 2, 3, 0, 0, 2])
    params = [net[0].weight, net[0].bias, net[2].weight]  # the last bias never enters an input gradient
    batched = mis_loss(net, x, y, other)
    batched_grads = torch.autograd.grad(batched.sum(), params)
    looped = torch.stack([mis_loss(net, x[i:i + 1], y[i:i + 1], other[i:i + 1])[0] for i in range(len(x))])
    looped_grads = [torch.zeros_like(p) for p in params]
    for i in range(len(x)):
        for acc, g in zip(looped_grads, torch.autograd.grad(
                mis_loss(net, x[i:i + 1], y[i:i + 1], other[i:i + 1]).sum(), params)):
            acc += g
    assert all(g.abs().sum() > 0 for g in batched_grads)
    assert torch.allclose(batched, looped, rtol=1e-12, atol=1e-12)
    for a, b in zip(batched_grads, looped_grads):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    # the double-backprop gradient w.r.t. the first weight matrix against finite differences
    first = net[0].weight

    def loss_of(weight: torch.Tensor) -> torch.Tensor:
        return mis_loss(lambda z: net[2](torch.tanh(nn.functional.linear(z, weight, net[0].bias))),
                        x, y, other).sum()

    assert torch.autograd.gradcheck(loss_of, (first.detach().clone().requires_grad_(True),))


# --------------------------------------------------------------------------- defining behaviour
def test_target_class_sensitivity_drops_relative_to_other_classes(digits_class_setup, class_run):
    setup = digits_class_setup
    _, model = class_run
    x, y, k = setup.forget.x, setup.forget.y, setup.data.n_classes
    own_before, others_before = sensitivities(setup.original, x, y, k)
    own_after, others_after = sensitivities(model, x, y, k)
    ratio_before = (own_before / others_before).mean().item()
    ratio_after = (own_after / others_after).mean().item()
    assert ratio_after < 0.5 * ratio_before, (ratio_before, ratio_after)
    assert own_after.mean() < own_before.mean()
    # on the retain set the relative sensitivity is kept far better than on the forget set
    xr, yr = setup.retain.x[:300], setup.retain.y[:300]
    r_own_b, r_oth_b = sensitivities(setup.original, xr, yr, k)
    r_own_a, r_oth_a = sensitivities(model, xr, yr, k)
    retain_ratio_change = (r_own_a / r_oth_a).mean().item() / (r_own_b / r_oth_b).mean().item()
    assert retain_ratio_change > 2 * ratio_after / ratio_before


def test_full_class_forgetting_keeps_retain_accuracy(digits_class_setup, class_run):
    _, model = class_run
    out = digits_class_setup.outputs(model)
    orig = digits_class_setup.outputs(digits_class_setup.original)
    assert accuracy(out.forget_logits, out.forget_labels) <= 0.05
    assert accuracy(out.retain_logits, out.retain_labels) >= accuracy(orig.retain_logits, orig.retain_labels) - 0.02


def test_stopping_rule_follows_algorithm_1(digits_class_setup, class_run):
    method, _ = class_run
    delta = 20.0  # the digits-class preset
    drops = [method.last_initial_loss - loss for loss in method.last_losses]
    assert method.last_stopped_early and method.last_iterations < 30
    assert len(drops) == method.last_iterations
    assert drops[-1] >= delta and all(d < delta for d in drops[:-1])
    assert method.last_initial_loss == method.last_losses[0]
    # a smaller delta stops earlier; delta = inf runs every one of max_iters iterations
    small, _ = run_direct(digits_class_setup, {"preset": "digits-class", "delta": 5.0})
    assert small.last_stopped_early and small.last_iterations < method.last_iterations
    full, _ = run_direct(digits_class_setup, {"preset": "digits-class", "delta": math.inf, "max_iters": 2})
    assert full.last_iterations == 2 and not full.last_stopped_early


def test_random_subset_barely_changes_the_model(digits_setup):
    """Paper Table 5: on a random subset MU-Mis leaves forget and retain accuracy essentially unchanged."""
    method, model = run_direct(digits_setup, {"preset": "digits"})
    out = digits_setup.outputs(model)
    assert method.last_stopped_early
    assert accuracy(out.forget_logits, out.forget_labels) >= 0.9
    assert accuracy(out.retain_logits, out.retain_labels) >= 0.98


def test_divergence_raises_instead_of_returning_nan(digits_class_setup):
    with pytest.raises(MuauditError, match="diverged"):
        run_direct(digits_class_setup, {"preset": "digits-class", "lr": 1e-2, "delta": math.inf})


def test_declares_no_retain_data():
    assert load_method("mu-mis").cls.needs == frozenset()


def test_generic_checks(digits_setup):
    check_method(digits_setup, load_method("mu-mis"), {"preset": "digits", "max_iters": 2})
