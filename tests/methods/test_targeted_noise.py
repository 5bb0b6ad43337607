"""delta-Targeted^lambda: the pseudo-label rule, the CE^lambda loss, forgetting with a small parameter change."""
from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from muaudit.audit import AuditSetup, method_context, run_method
from muaudit.base import MethodData
from muaudit.readouts import accuracy, parameter_change
from muaudit.testing import check_method, load_method
from muaudit.training import predict_logits
from muaudit.zoo import last_linear_prefix
from muaudit_methods.targeted_noise import targeted_labels, targeted_loss


def run_direct(setup: AuditSetup, params: dict[str, Any], seed: int = 0) -> tuple[Any, nn.Module]:
    """Run the method on a copy of the original; return (the instance with its diagnostics, the model)."""
    method = load_method("targeted-noise").cls(**params)
    model = method.unlearn(copy.deepcopy(setup.original), MethodData("targeted-noise", setup.forget),
                           method_context(setup, seed, None))
    return method, model


# ------------------------------------------------------------------------------ pseudo-label rule
LOGITS = torch.tensor([
    [5.0, 3.0, 1.0, 0.0],   # y = 0, predicted 0 (correct)   -> second best 1
    [5.0, 3.0, 1.0, 0.0],   # y = 2, predicted 0 (incorrect) -> the prediction 0
    [0.0, 4.0, 2.0, 3.0],   # y = 1, predicted 1 (correct)   -> second best 3
    [1.0, 2.0, 9.0, 0.0],   # y = 0, predicted 2 (incorrect) -> the prediction 2
])
LABELS = torch.tensor([0, 2, 1, 0])


def test_delta_zero_relabels_every_example():
    alpha = torch.tensor([0.0, 0.3, 0.6, 0.99])
    assert targeted_labels(LOGITS, LABELS, alpha, 0.0).tolist() == [1, 0, 3, 2]


def test_delta_one_keeps_every_label():
    alpha = torch.tensor([0.0, 0.3, 0.6, 0.9999])
    assert targeted_labels(LOGITS, LABELS, alpha, 1.0).tolist() == LABELS.tolist()


def test_alpha_below_delta_keeps_the_label_and_at_delta_relabels():
    alpha = torch.tensor([0.2, 0.7, 0.5, 0.49])
    assert targeted_labels(LOGITS, LABELS, alpha, 0.5).tolist() == [0, 0, 3, 0]


def test_relabelled_examples_never_keep_their_label():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 10, generator=gen)
    y = torch.randint(0, 10, (500,), generator=gen)
    new = targeted_labels(logits, y, torch.ones(500) * 0.5, 0.0)
    assert (new != y).all()
    correct = logits.argmax(1) == y
    assert (new[~correct] == logits.argmax(1)[~correct]).all()
    second = logits.topk(2, dim=1).indices[:, 1]
    assert (new[correct] == second[correct]).all()


def test_loss_is_cross_entropy_to_the_power_lambda():
    logits = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    ce = F.cross_entropy(logits, target, reduction="none")
    assert torch.allclose(targeted_loss(logits, target, 1.0), ce)
    assert torch.allclose(targeted_loss(logits, target, 3.0), ce ** 3)


def test_method_labels_follow_the_rule_on_the_pretrained_model(digits_setup):
    method, _ = run_direct(digits_setup, {"preset": "paper", "max_steps": 1})
    logits = predict_logits(digits_setup.original, digits_setup.forget, torch.device("cpu"))
    y = digits_setup.forget.y
    assert torch.equal(method.last_pseudo_labels, targeted_labels(logits, y, torch.zeros(len(y)), 0.0))
    half, _ = run_direct(digits_setup, {"delta": 0.5, "max_steps": 1})
    kept = (half.last_pseudo_labels == y).float().mean().item()
    assert 0.3 < kept < 0.7  # alpha ~ U(0, 1) per example


def test_delta_one_leaves_a_fitted_model_untouched(digits_setup):
    method, model = run_direct(digits_setup, {"delta": 1.0})
    assert method.last_converged and method.last_steps == 0
    for a, b in zip(model.parameters(), digits_setup.original.parameters()):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------- defining behaviour
def test_forgets_with_smaller_change_and_better_retain_accuracy_than_neggrad(digits_class_setup):
    setup = digits_class_setup
    last = last_linear_prefix(setup.original)
    method, model = run_direct(setup, {})  # paper defaults: delta 0, lambda 3, Adam 1e-4, wd 1e-5
    ours = setup.outputs(model)
    ours_change = parameter_change(model, setup.original, last)
    # NegGrad with a learning rate at which it also drives forget accuracy to about zero
    neggrad = run_method(setup, load_method("neggrad"), {"lr": 1e-2, "epochs": 5, "batch_size": 32}, seed=0)
    theirs = setup.outputs(neggrad.model)
    theirs_change = parameter_change(neggrad.model, setup.original, last)
    assert method.last_converged and method.last_loss < 0.05
    assert accuracy(ours.forget_logits, ours.forget_labels) == 0.0
    assert accuracy(theirs.forget_logits, theirs.forget_labels) <= 0.05
    assert ours_change.l1_all < theirs_change.l1_all
    assert ours_change.l1_last < theirs_change.l1_last
    ours_retain = accuracy(ours.retain_logits, ours.retain_labels)
    assert ours_retain > accuracy(theirs.retain_logits, theirs.retain_labels)
    assert ours_retain >= 0.95


def test_lambda_one_also_forgets(digits_class_setup):
    method, model = run_direct(digits_class_setup, {"lam": 1.0})
    out = digits_class_setup.outputs(model)
    assert method.last_converged and method.last_loss < 0.05
    assert accuracy(out.forget_logits, out.forget_labels) == 0.0
    assert accuracy(out.retain_logits, out.retain_labels) >= 0.9


def test_max_steps_guard_and_chunking(digits_setup):
    whole, model = run_direct(digits_setup, {"max_steps": 4})
    assert whole.last_steps == 4 and not whole.last_converged
    _, chunked = run_direct(digits_setup, {"max_steps": 4, "batch_size": 50})
    for a, b in zip(model.parameters(), chunked.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_declares_no_retain_data():
    assert load_method("targeted-noise").cls.needs == frozenset()


@pytest.mark.parametrize("lam", [1.0, 3.0])
def test_generic_checks(digits_setup, lam):
    check_method(digits_setup, load_method("targeted-noise"), {"lam": lam, "max_steps": 10})
