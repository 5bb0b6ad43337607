"""random-label: relabelling D_f drives full-class forget accuracy to ~0 while D_r keeps the rest."""
from __future__ import annotations

import pytest
import torch

from muaudit.audit import run_method
from muaudit.errors import ParameterError
from muaudit.readouts import accuracy
from muaudit.testing import check_method, load_method
from muaudit_methods.random_label import labels_other_than_own, labels_outside_classes

FAST = {"lr": 1e-3, "epochs": 1, "batch_size": 256}



def accuracies(setup, model) -> dict[str, float]:
    out = setup.outputs(model)
    return {s: accuracy(getattr(out, f"{s}_logits"), getattr(out, f"{s}_labels")) for s in ("forget", "retain", "test")}


@pytest.mark.parametrize("params", [
    {"lr": 1e-3},                                          # amnesiac (SSD), labels != own label
    {"lr": 1e-3, "exclude": "forget-classes"},              # amnesiac, SSD full-class rule
    {"preset": "paper", "variant": "salun", "epochs": 2},   # SalUn CIFAR-10 loop, its own defaults
    {"preset": "paper", "variant": "salun-shuffled", "epochs": 2},  # SalUn CIFAR-100 loop
])
def test_full_class_forget_accuracy_goes_to_zero(digits_class_setup, params):
    acc = accuracies(digits_class_setup, run_method(digits_class_setup, load_method("random-label"), params, seed=0).model)
    assert acc["forget"] <= 0.05
    assert acc["retain"] >= 0.85


def test_amnesiac_labels_avoid_the_true_label_and_cover_the_others():
    y = torch.arange(10).repeat(200)
    labels = labels_other_than_own(y, 10, torch.Generator().manual_seed(0))
    assert not torch.any(labels == y)
    for c in range(10):
        assert set(labels[y == c].tolist()) == set(range(10)) - {c}


def test_class_rule_excludes_every_forgotten_class_and_refuses_when_none_is_left():
    y = torch.tensor([3, 3, 5, 3, 5] * 50)
    labels = labels_outside_classes(y, 10, torch.Generator().manual_seed(0))
    assert set(labels.tolist()) == set(range(10)) - {3, 5}
    with pytest.raises(ParameterError):
        labels_outside_classes(torch.arange(10), 10, torch.Generator().manual_seed(0))


def test_labels_depend_on_the_seed(digits_setup):
    method = load_method("random-label")
    a = run_method(digits_setup, method, FAST, seed=1).model.state_dict()
    b = run_method(digits_setup, method, FAST, seed=2).model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_generic_checks(digits_setup):
    check_method(digits_setup, load_method("random-label"), FAST)
    check_method(digits_setup, load_method("random-label"), {**FAST, "variant": "salun"})
