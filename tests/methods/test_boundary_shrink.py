"""boundary-shrink: FGSM neighbour labels of the frozen original, then fine-tuning D_f towards them."""
from __future__ import annotations

import copy

import torch
from torch import nn

from muaudit.audit import run_method
from muaudit.testing import check_method, load_method
from muaudit_methods.boundary_shrink import BoundaryShrink, fgsm_neighbour_labels


def _reference_labels(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bound: float, discretize: bool
                      ) -> torch.Tensor:
    """FGSM written out independently: a summed loss (same gradient sign as the mean), one step, clip, round."""
    model = copy.deepcopy(model).eval()
    x = x.clone().requires_grad_(True)
    nn.functional.cross_entropy(model(x), y, reduction="sum").backward()
    x_adv = torch.clamp(x.detach() + bound * x.grad.sign(), 0.0, 1.0)
    if discretize:
        x_adv = torch.round(x_adv * 255) / 255
    with torch.no_grad():
        return model(x_adv).argmax(dim=1)


def test_neighbour_labels_are_the_fgsm_labels_of_the_original(digits_class_setup):
    setup = digits_class_setup
    labeller = copy.deepcopy(setup.original)
    for discretize in (True, False):
        labels = fgsm_neighbour_labels(labeller, setup.forget, 0.1, discretize, torch.device("cpu"), batch_size=50)
        expected = _reference_labels(setup.original, setup.forget.x, setup.forget.y, 0.1, discretize)
        assert torch.equal(labels, expected)
    assert all(p.grad is None for p in labeller.parameters()), "labelling must not leave parameter gradients"
    # Not guaranteed to differ from the true label: on this task some FGSM steps do not cross the boundary.
    differs = labels != setup.forget.y
    assert 0 < int(differs.sum()) < len(labels)


def test_training_moves_forget_predictions_to_the_neighbour_labels(digits_class_setup):
    setup = digits_class_setup
    y_nbr = fgsm_neighbour_labels(setup.original, setup.forget, 0.1, True, torch.device("cpu"))
    before = setup.outputs(setup.original).forget_logits.argmax(dim=1)
    run = run_method(setup, load_method("boundary-shrink"), {"preset": "paper", "lr": 0.01, "epochs": 30}, seed=0)
    after = setup.outputs(run.model).forget_logits.argmax(dim=1)
    assert (before == y_nbr).float().mean() < 0.7
    assert (after == y_nbr).float().mean() > 0.95
    assert (after == setup.forget.y).float().mean() < (before == setup.forget.y).float().mean()


def test_defaults_follow_the_authors_code():
    p = BoundaryShrink().hparams
    assert (p["epochs"], p["lr"], p["momentum"], p["weight_decay"], p["bound"], p["discretize"]) == (
        10, 1e-5, 0.9, 0.0, 0.1, True)
    assert BoundaryShrink.needs == frozenset()


def test_generic_checks(digits_setup):
    check_method(digits_setup, load_method("boundary-shrink"), {"lr": 0.01, "epochs": 2})
