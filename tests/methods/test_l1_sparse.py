"""l1-sparse: fine-tuning on D_r with a linearly decaying L1 penalty on every parameter."""
from __future__ import annotations

import pytest
import torch

from muaudit.audit import run_method
from muaudit.checkpoint import state_dict_sha256
from muaudit.testing import check_method, load_method
from muaudit_methods.l1_sparse import L1Sparse, l1_norm, l1_weight

SHARED = {"epochs": 10, "lr": 0.01, "batch_size": 256, "momentum": 0.9, "weight_decay": 5e-4}


def test_lowers_the_l1_norm_relative_to_plain_finetune(digits_setup):
    sparse = run_method(digits_setup, load_method("l1-sparse"), {"alpha": 1e-4, **SHARED}, seed=0).model
    plain = run_method(digits_setup, load_method("finetune"), SHARED, seed=0).model
    assert l1_norm(sparse).item() < l1_norm(plain).item() - 1.0
    assert l1_norm(sparse).item() < l1_norm(digits_setup.original).item()


def test_alpha_zero_is_finetune_bit_for_bit(digits_setup):
    sparse = run_method(digits_setup, load_method("l1-sparse"), {"alpha": 0.0, **SHARED}, seed=3).model
    plain = run_method(digits_setup, load_method("finetune"), SHARED, seed=3).model
    assert state_dict_sha256(sparse.state_dict()) == state_dict_sha256(plain.state_dict())


def test_l1_weight_decays_linearly_then_stays_zero():
    assert [l1_weight(1.0, e, 10, 0) for e in range(10)] == pytest.approx([1 - e / 10 for e in range(10)])
    assert [l1_weight(2.0, e, 10, 2) for e in (0, 4, 7, 8, 9)] == pytest.approx([2.0, 1.0, 0.25, 0.0, 0.0])
    assert l1_weight(1.0, 0, 3, 3) == 0.0


def test_l1_norm_covers_every_parameter():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    expected = sum(float(p.detach().abs().sum()) for p in model.parameters())
    assert l1_norm(model).item() == pytest.approx(expected)


def test_default_alpha_is_not_salun_argparse_default():
    assert L1Sparse().hparams["alpha"] == 1e-4
    assert (L1Sparse().hparams["lr"], L1Sparse().hparams["epochs"]) == (0.01, 10)


def test_generic_checks(digits_setup):
    check_method(digits_setup, load_method("l1-sparse"), {"epochs": 2})
