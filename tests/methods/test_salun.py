"""salun: masked-out weights stay bit-identical under momentum and weight decay; the class is forgotten."""
from __future__ import annotations

import copy

import pytest
import torch

from muaudit.audit import method_context, run_method
from muaudit.readouts import accuracy
from muaudit.testing import check_method, load_method
from muaudit_methods.random_label import resolve_settings, run_random_label
from muaudit_methods.salun import SALUN_DEFAULTS, MaskPinning, saliency, top_fraction_mask

FAST = {"epochs": 1, "batch_size": 256}



def mask_of(setup, ratio: float, batch_size: int = 256) -> dict[str, torch.Tensor]:
    return top_fraction_mask(saliency(copy.deepcopy(setup.original), setup.forget, batch_size, setup.device), ratio)


@pytest.mark.parametrize("ratio", [0.5, 0.1])
def test_masked_out_weights_stay_bit_identical(digits_class_setup, ratio):
    setup = digits_class_setup
    params = {"mask_ratio": ratio, "epochs": 2, "momentum": 0.9, "weight_decay": 5e-3}
    new = dict(run_method(setup, load_method("salun"), params, seed=0).model.named_parameters())
    masks = mask_of(setup, ratio)
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == int(total * ratio)
    changed = 0
    for name, old in setup.original.named_parameters():
        frozen = ~masks[name]
        assert torch.equal(new[name].detach()[frozen], old.detach()[frozen]), f"{name}: a masked-out weight moved"
        changed += int((new[name].detach() != old.detach())[masks[name]].sum())
    assert changed > 0


def test_gradient_masking_alone_lets_frozen_weights_drift(digits_class_setup):
    """Why the 2026 fix re-pins: with weight decay and momentum, masking the gradient is not enough."""
    setup = digits_class_setup
    model = copy.deepcopy(setup.original)
    masks = mask_of(setup, 0.5)
    pin = MaskPinning(model, masks)
    settings = resolve_settings({**SALUN_DEFAULTS, "variant": "salun", "epochs": 1})
    run_random_label(model, setup.forget, setup.retain, settings, method_context(setup, 0, None),
                     after_backward=pin.mask_grads)
    drifted = sum(int((p.detach() != pin.theta0[n])[~masks[n]].sum()) for n, p in model.named_parameters())
    assert drifted > 0


def test_top_fraction_mask_is_global_and_breaks_ties_by_position():
    scores = {"a": torch.tensor([3.0, 0.0, 1.0]), "b": torch.tensor([[0.0, 5.0], [1.0, 0.0]])}
    masks = top_fraction_mask(scores, 0.5)  # keep int(7 * 0.5) = 3: 5, 3 and the first 1 (in a)
    assert masks["a"].tolist() == [True, False, True]
    assert masks["b"].tolist() == [[False, True], [False, False]]
    assert all(m.all() for m in top_fraction_mask(scores, 1.0).values())


def test_forgets_the_class(digits_class_setup):
    setup = digits_class_setup
    out = setup.outputs(run_method(setup, load_method("salun"), {"epochs": 3}, seed=0).model)
    assert accuracy(out.forget_logits, out.forget_labels) <= 0.05
    assert accuracy(out.retain_logits, out.retain_labels) >= 0.95


def test_generic_checks(digits_setup):
    check_method(digits_setup, load_method("salun"), FAST)
