"""ssd: only weights far more important to D_f than to D are touched, and those are only dampened."""
from __future__ import annotations

import copy

import pytest
import torch

from muaudit.audit import method_context, run_method
from muaudit.readouts import accuracy
from muaudit.testing import check_method, load_method
from muaudit_methods.ssd import SSD, importances



@pytest.mark.parametrize("alpha", [10.0, 2.0])
def test_dampens_only_selected_weights(digits_class_setup, alpha):
    setup = digits_class_setup
    method = SSD(alpha=alpha)
    ctx = method_context(setup, 0, None)
    i_d = method.compute_train_stats(copy.deepcopy(setup.original), setup.data.train, ctx)
    i_f = importances(copy.deepcopy(setup.original), setup.forget, 128, setup.device)
    new = dict(run_method(setup, load_method("ssd"), {"alpha": alpha}, seed=0).model.named_parameters())
    n_selected = 0
    for name, old in setup.original.named_parameters():
        old, after = old.detach(), new[name].detach()
        selected = i_f[name] > alpha * i_d[name]
        n_selected += int(selected.sum())
        assert torch.equal(after[~selected], old[~selected]), f"{name}: an unselected weight changed"
        assert torch.all(after.abs() <= old.abs()), f"{name}: a weight grew"
        assert torch.all(after * old >= 0), f"{name}: a weight changed sign"
        beta = (i_d[name][selected] / i_f[name][selected]).clamp(max=1.0)
        torch.testing.assert_close(after[selected], old[selected] * beta)
    assert n_selected > 0


def test_forgets_the_class_without_training(digits_class_setup):
    setup = digits_class_setup
    out = setup.outputs(run_method(setup, load_method("ssd"), {}, seed=0).model)
    assert accuracy(out.forget_logits, out.forget_labels) <= 0.2
    assert accuracy(out.retain_logits, out.retain_labels) >= 0.85


def test_full_importances_are_cached_per_batch_size(digits_setup):
    assert SSD(batch_size=64).train_stats_params()["batch_size"] == 64
    first = run_method(digits_setup, load_method("ssd"), {"batch_size": 100}, seed=0)
    second = run_method(digits_setup, load_method("ssd"), {"batch_size": 100}, seed=5)
    assert second.stats_seconds == 0.0  # read back from the cache
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(),
                                                 second.model.state_dict().values()))


def test_generic_checks(digits_setup):
    check_method(digits_setup, load_method("ssd"), {})
