"""bad-teacher: forget outputs move toward the incompetent teacher; retain outputs stay with the original."""
from __future__ import annotations

import pytest
import torch

from muaudit.audit import run_method
from muaudit.readouts import accuracy, kl_divergence
from muaudit.testing import check_method, load_method
from muaudit.training import fresh_model, predict_logits
from muaudit_methods.bad_teacher import incompetent_teacher_seed, unlearner_loss

FAST = {"lr": 1e-3, "epochs": 1}



def test_forget_outputs_move_toward_the_incompetent_teacher(digits_class_setup):
    setup, seed = digits_class_setup, 0
    run = run_method(setup, load_method("bad-teacher"), {"lr": 1e-3, "epochs": 3}, seed=seed)
    incompetent = fresh_model(setup.task, setup.data, incompetent_teacher_seed(seed))
    bad = predict_logits(incompetent, setup.forget, setup.device)
    before, after = setup.outputs(setup.original), setup.outputs(run.model)
    assert kl_divergence(bad, after.forget_logits) < 0.6 * kl_divergence(bad, before.forget_logits)
    assert kl_divergence(before.retain_logits, after.retain_logits) < 0.1
    assert accuracy(after.retain_logits, after.retain_labels) >= 0.95


def test_default_settings_move_forget_outputs_a_little(digits_setup):
    """The official settings (Adam 1e-4, one epoch) already reduce KL(incompetent || student) on D_f."""
    setup = digits_setup
    run = run_method(setup, load_method("bad-teacher"), {}, seed=0)
    bad = predict_logits(fresh_model(setup.task, setup.data, incompetent_teacher_seed(0)), setup.forget, setup.device)
    assert kl_divergence(bad, setup.outputs(run.model).forget_logits) < kl_divergence(
        bad, setup.outputs(setup.original).forget_logits)


def test_mean_reduction_is_batchmean_divided_by_the_class_count():
    gen = torch.Generator().manual_seed(0)
    s, c, u = (torch.randn(6, 10, generator=gen) for _ in range(3))
    flags = torch.tensor([1, 0, 1, 1, 0, 0])
    mean = unlearner_loss(s, flags, c, u, 2.0, "mean")
    batchmean = unlearner_loss(s, flags, c, u, 2.0, "batchmean")
    torch.testing.assert_close(mean * 10, batchmean)
    target = flags[:, None] * torch.softmax(u / 2, 1) + (1 - flags[:, None]) * torch.softmax(c / 2, 1)
    manual = (target * (target.log() - torch.log_softmax(s / 2, 1))).sum(1).mean()
    torch.testing.assert_close(batchmean, manual)


def test_reduction_barely_matters_under_adam(digits_setup):
    """The docstring's justification: Adam is (almost) invariant to the constant factor K between reductions."""
    method = load_method("bad-teacher")
    start = digits_setup.original.state_dict()
    a = run_method(digits_setup, method, {**FAST, "kl_reduction": "mean"}, seed=0).model.state_dict()
    b = run_method(digits_setup, method, {**FAST, "kl_reduction": "batchmean"}, seed=0).model.state_dict()
    gap = sum(float((a[k] - b[k]).pow(2).sum()) for k in a) ** 0.5
    moved = sum(float((a[k] - start[k]).pow(2).sum()) for k in a) ** 0.5
    assert moved > 0 and gap < 0.05 * moved


def test_generic_checks(digits_setup):
    check_method(digits_setup, load_method("bad-teacher"), FAST)
