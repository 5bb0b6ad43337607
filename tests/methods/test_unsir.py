"""unsir: error-maximising noise for the forgotten class, an impair epoch and a repair epoch."""
from __future__ import annotations

import copy

import pytest
import torch

from muaudit.audit import run_method
from muaudit.readouts import accuracy
from muaudit.testing import check_method, load_method
from muaudit.training import generator
from muaudit_methods.unsir import UNSIR, error_maximising_noise, retain_subset

FORGET_CLASS = 3


def _accuracies(setup, model):
    out = setup.outputs(model)
    keep = out.test_labels != FORGET_CLASS
    return (accuracy(out.forget_logits, out.forget_labels), accuracy(out.retain_logits, out.retain_labels),
            accuracy(out.test_logits[keep], out.test_labels[keep]))


def test_forgets_the_class_and_repairs_the_others(digits_class_setup):
    setup = digits_class_setup
    plugin = load_method("unsir")
    forget, retain, test_others = _accuracies(setup, run_method(setup, plugin, {}, seed=0).model)
    _, impaired_retain, impaired_test = _accuracies(setup, run_method(setup, plugin, {"repair_epochs": 0},
                                                                      seed=0).model)
    assert forget <= 0.05
    assert retain >= 0.8 and test_others >= 0.8
    assert retain > impaired_retain + 0.05 and test_others > impaired_test


def test_noise_maximises_the_forget_class_error(digits_class_setup):
    model = copy.deepcopy(digits_class_setup.original)
    args = dict(cls=FORGET_CLASS, n=64, input_shape=(1, 8, 8), lr=0.1, reg=0.1, device=torch.device("cpu"))
    start = error_maximising_noise(model, steps=0, clamp=False, gen=generator(0), **args)
    noise = error_maximising_noise(model, steps=40, clamp=False, gen=generator(0), **args)
    target = torch.full((64,), FORGET_CLASS)
    with torch.no_grad():
        ce = [torch.nn.functional.cross_entropy(model(x), target).item() for x in (start, noise)]
        # The model's normalisation maps the noise back to standardised units, where the penalty acts.
        z = model.normalize(noise)
    assert ce[1] > ce[0] + 1.0
    assert (model(noise).argmax(dim=1) != FORGET_CLASS).float().mean() > 0.9
    assert z.abs().max() < 10 and all(p.grad is None for p in model.parameters())
    clamped = error_maximising_noise(model, steps=5, clamp=True, gen=generator(0), **args)
    assert clamped.min() >= 0.0 and clamped.max() <= 1.0


def test_presets_and_overrides():
    official = UNSIR(preset="official").settings()
    assert (official["noise_batch_size"], official["noise_steps"], official["noise_copies"],
            official["retain_per_class"], official["impair_lr"], official["repair_lr"]) == (256, 40, 20, 1000,
                                                                                          0.02, 0.01)
    ssd = UNSIR(preset="ssd", impair_lr=0.5).settings()
    assert (ssd["noise_batch_size"], ssd["noise_steps"], ssd["noise_copies"], ssd["retain_per_class"],
            ssd["impair_lr"], ssd["repair_lr"], ssd["repair_batch_size"]) == (32, 25, 80, 500, 0.5, 1e-4, 128)


def test_retain_subset_is_a_per_class_sample(digits_class_setup):
    retain = digits_class_setup.retain
    subset = retain_subset(retain, 5, generator(1))
    assert torch.equal(torch.bincount(subset.y), torch.bincount(retain.y).clamp(max=5))


def test_warns_when_forget_set_is_not_whole_classes(digits_setup):
    small = {"noise_batch_size": 4, "noise_steps": 1, "noise_copies": 1, "retain_per_class": 5}
    with pytest.warns(UserWarning, match="forgets whole classes"):
        run_method(digits_setup, load_method("unsir"), small, seed=0)


def test_generic_checks(digits_class_setup):
    check_method(digits_class_setup, load_method("unsir"), {})


# ------------------------------------------------------------------------------------ noise count (issue 12)
def test_noise_images_per_batch_rules():
    from muaudit_methods.unsir import noise_images_per_batch

    assert noise_images_per_batch("reference", 256, (3, 32, 32)) == 3  # the references' loop over batch[0].size(0)
    assert noise_images_per_batch("reference", 256, (1, 8, 8)) == 1
    assert noise_images_per_batch("reference", 2, (3, 32, 32)) == 2
    assert noise_images_per_batch("intended", 256, (3, 32, 32)) == 256
    with pytest.raises(ValueError):
        noise_images_per_batch("other", 256, (1, 8, 8))


@pytest.mark.parametrize("preset, rule, per_class", [("official", "reference", 20 * 1), ("paper", "reference", 20),
                                                      ("ssd", "reference", 80 * 1), ("intended", "intended", 256 * 20)])
def test_effective_noise_count_per_preset(digits_class_setup, monkeypatch, preset, rule, per_class):
    """The impair set holds noise_copies x (channel count) noise images per class under the references' rule (1
    channel here) and noise_copies x noise_batch_size under the intended one; counted in the impair set itself."""
    import muaudit_methods.unsir as unsir_module

    seen = []
    real = unsir_module._train_epochs

    def spy(model, split, *args):
        seen.append(split)
        return real(model, split, *args)

    monkeypatch.setattr(unsir_module, "_train_epochs", spy)
    small = {"noise_steps": 1, "retain_per_class": 5, "impair_epochs": 1, "repair_epochs": 0}
    run = run_method(digits_class_setup, load_method("unsir"), {"preset": preset, **small}, seed=0)
    assert run.params["noise_count_rule"] == rule
    assert run.diagnostics["noise_images_per_class"] == per_class
    impair = seen[0]
    assert len(impair) == per_class + 5 * 9  # the noise of class 3, then 5 retain examples of each other class
    assert int((impair.y == FORGET_CLASS).sum()) == per_class


def test_noise_count_rule_overrides_the_preset():
    assert UNSIR(preset="official", noise_count_rule="intended").settings()["noise_count_rule"] == "intended"
    assert UNSIR(preset="digits-class").settings()["noise_count_rule"] == "intended"
