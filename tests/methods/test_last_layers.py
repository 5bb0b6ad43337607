"""eu-k and cf-k: only the last k Linear/Conv layers change; EU-k re-initialises them first."""
from __future__ import annotations

import pytest
import torch

from muaudit.audit import run_method
from muaudit.data import Split
from muaudit.errors import ParameterError
from muaudit.task import Recipe
from muaudit.testing import check_method, load_method
from muaudit.training import derive_seed, fresh_model, generator
from muaudit.zoo import build_model
from muaudit_methods.last_layers import CFk, EUk, last_layers, layer_groups, train_layers


def _changed(before: dict, after: dict) -> set[str]:
    return {key for key in before if not torch.equal(before[key], after[key])}


@pytest.mark.parametrize("name", ["eu-k", "cf-k"])
@pytest.mark.parametrize("k", [1, 2])
def test_only_the_last_k_layers_change(digits_setup, name, k):
    run = run_method(digits_setup, load_method(name), {"k": k, "epochs": 2}, seed=0)
    layers = {1: {"net.5"}, 2: {"net.3", "net.5"}}[k]
    expected = {f"{layer}.{p}" for layer in layers for p in ("weight", "bias")}
    assert _changed(digits_setup.original.state_dict(), run.model.state_dict()) == expected


def test_eu_k_starts_from_the_architectures_fresh_initialisation(digits_setup):
    # A vanishing learning rate leaves the re-initialised head exactly at its fresh initialisation.
    run = run_method(digits_setup, load_method("eu-k"), {"k": 1, "epochs": 1, "lr": 1e-30}, seed=4)
    fresh = fresh_model(digits_setup.task, digits_setup.data, derive_seed(4, "init")).state_dict()
    state = run.model.state_dict()
    for key in ("net.5.weight", "net.5.bias"):
        assert torch.equal(state[key], fresh[key])
        assert not torch.equal(state[key], digits_setup.original.state_dict()[key])
    cf = run_method(digits_setup, load_method("cf-k"), {"k": 1, "epochs": 1, "lr": 1e-30}, seed=4).model
    assert torch.equal(cf.state_dict()["net.5.weight"], digits_setup.original.state_dict()["net.5.weight"])


def test_layer_groups_pair_convolutions_with_their_batchnorm():
    vgg = build_model("smallvgg", (1, 8, 8), 10, [0.5], [0.3], {"width": 4, "hidden": 16}, seed=0)
    assert layer_groups(vgg) == [("net.features.0", "net.features.1"), ("net.features.4", "net.features.5"),
                                 ("net.features.8", "net.features.9"), ("net.classifier.1",),
                                 ("net.classifier.4",)]
    resnet = build_model("resnet18", (3, 8, 8), 10, [0.5] * 3, [0.3] * 3, {"width": 2}, seed=0)
    groups = layer_groups(resnet)
    assert len(groups) == 21 and groups[-1] == ("net.fc",)
    assert groups[-2] == ("net.layer4.1.conv2", "net.layer4.1.bn2")
    with pytest.raises(ParameterError, match="only 5"):
        last_layers(vgg, 6, "eu-k")


def test_frozen_batchnorm_statistics_stay_bit_identical():
    model = build_model("smallvgg", (1, 8, 8), 10, [0.5], [0.3], {"width": 4, "hidden": 16}, seed=0)
    gen = generator(0)
    split = Split(torch.rand(32, 1, 8, 8, generator=gen), torch.randint(0, 10, (32,), generator=gen))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names = last_layers(model, 3, "cf-k")
    recipe = Recipe(epochs=1, batch_size=8, lr=0.01, schedule="constant")
    train_layers(model, names, split, recipe, generator(1), torch.device("cpu"))
    changed = _changed(before, model.state_dict())
    assert {k.rsplit(".", 1)[0] for k in changed} == {"net.features.8", "net.features.9", "net.classifier.1",
                                                     "net.classifier.4"}
    assert "net.features.9.running_mean" in changed
    assert all(p.requires_grad for p in model.parameters())


def test_k_larger_than_the_model_is_a_parameter_error(digits_setup):
    with pytest.raises(ParameterError, match="'k'"):
        run_method(digits_setup, load_method("eu-k"), {"k": 4, "epochs": 1}, seed=0)


def test_defaults():
    assert EUk().hparams["k"] == 3 and EUk().recipe(Recipe()) == Recipe()
    assert EUk(epochs=2, lr=0.5).recipe(Recipe()) == Recipe(epochs=2, lr=0.5)
    p = CFk().hparams
    assert (p["k"], p["epochs"], p["lr"], p["batch_size"], p["momentum"], p["weight_decay"]) == (3, 10, 0.01, 64,
                                                                                                0.0, 0.0)


@pytest.mark.parametrize("name", ["eu-k", "cf-k"])
def test_generic_checks(digits_setup, name):
    check_method(digits_setup, load_method(name), {"k": 1, "epochs": 2})
