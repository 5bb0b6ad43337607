"""neggrad-plus: the retain term keeps test accuracy where plain gradient ascent at the same lr collapses."""
from __future__ import annotations

import pytest
import torch

from muaudit.audit import run_method
from muaudit.readouts import accuracy
from muaudit.testing import check_method, load_method

FAST = {"epochs": 1, "lr": 0.01, "batch_size": 256}



def accuracies(setup, model) -> dict[str, float]:
    out = setup.outputs(model)
    return {s: accuracy(getattr(out, f"{s}_logits"), getattr(out, f"{s}_labels")) for s in ("forget", "retain", "test")}


def test_forgets_while_keeping_test_accuracy_better_than_neggrad(digits_class_setup):
    lr = 0.05
    plus = accuracies(digits_class_setup,
                      run_method(digits_class_setup, load_method("neggrad-plus"),
                                 {"lr": lr, "beta": 0.7, "epochs": 2}, seed=0).model)
    assert plus["forget"] <= 0.5
    assert plus["retain"] >= 0.95
    # plain NegGrad at the same lr, run just long enough to forget as much: its test accuracy collapses
    for epochs in range(1, 7):
        plain = accuracies(digits_class_setup,
                           run_method(digits_class_setup, load_method("neggrad"),
                                      {"lr": lr, "epochs": epochs, "batch_size": 64, "max_loss": 1e4}, seed=0).model)
        if plain["forget"] <= 0.5:
            break
    else:
        pytest.fail("neggrad never forgot at this lr")
    assert plus["test"] > plain["test"] + 0.2


def test_beta_one_ignores_the_forget_set(digits_setup):
    """beta = 1 is plain SGD on D_r: the forget batches must have no effect at all."""
    method = load_method("neggrad-plus")
    params = {**FAST, "beta": 1.0}
    a = run_method(digits_setup, method, params, seed=3).model.state_dict()
    b = run_method(digits_setup, method, {**params, "forget_batch_size": 7}, seed=3).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_generic_checks(digits_setup):
    check_method(digits_setup, load_method("neggrad-plus"), FAST)
