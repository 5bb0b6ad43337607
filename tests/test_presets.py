"""Task-matched defaults: the scale rule, preset resolution, and every built-in's auto preset."""
from __future__ import annotations

import pytest
import torch

from muaudit.base import MethodContext, MethodData, UnlearningMethod
from muaudit.cli import main
from muaudit.errors import ParameterError
from muaudit.params import Interval, Param
from muaudit.plugins import METHODS, discover, load_by_name
from muaudit.presets import Relative, TaskProfile, choose_preset, preset_param, removal_kind, scale_family
from muaudit.task import Recipe


def profile(arch: str = "mlp", shape: tuple[int, ...] = (1, 8, 8), kind: str = "random", dataset: str = "digits",
            epochs: int = 30, lr: float = 0.05) -> TaskProfile:
    return TaskProfile("t", None, dataset, kind, 100, 1000, 10, shape, arch, epochs, lr, 64)


@pytest.mark.parametrize("arch, shape, family", [
    ("mlp", (1, 8, 8), "digits"), ("mlp", (3, 32, 32), "digits"), ("cnn", (1, 28, 28), "fmnist"),
    ("cnn", (3, 32, 32), "paper"), ("resnet18", (3, 32, 32), "paper"), ("allcnn", (1, 28, 28), "paper"),
])
def test_scale_family_follows_the_architecture(arch, shape, family):
    assert scale_family(profile(arch, shape)) == family


@pytest.mark.parametrize("kind, removal", [("full-class", "class"), ("sub-class", "class"), ("random", "sample"),
                                           ("class-subset", "sample"), ("indices", "sample"),
                                           ("label-flip", "poison")])
def test_removal_kinds(kind, removal):
    assert removal_kind(kind) == removal


def test_choose_preset_falls_back_from_specific_to_paper():
    names = {"paper": {}, "digits": {}, "digits-class": {}}
    assert choose_preset(names, profile(kind="full-class")).name == "digits-class"
    assert choose_preset(names, profile(kind="random")).name == "digits"
    assert choose_preset(names, profile(arch="cnn", shape=(1, 28, 28))).name == "paper"
    with pytest.raises(ParameterError):
        choose_preset({"digits": {}}, profile(arch="resnet18", shape=(3, 32, 32)))


class _Toy(UnlearningMethod):
    name = "toy"
    summary = "toy"
    paper = "none"
    presets = {"paper": {"lr": 1.0, "epochs": 3}, "digits": {"lr": Relative("lr", 2.0), "epochs": 7}}
    params = (preset_param(presets), Param("lr", float, 1.0, "lr", Interval(0, None, closed="neither")),
              Param("epochs", int, 3, "epochs", Interval(1, None)))

    def unlearn(self, model, data, ctx):
        self.seen = self.hparams.as_dict()
        return model


def test_explicit_values_win_over_the_preset_and_relative_values_follow_the_recipe():
    method = _Toy(preset="digits", epochs=2)
    assert method.preset_pending  # the relative lr needs the task
    method.for_task(profile(lr=0.05))
    assert method.hparams.as_dict() == {"preset": "digits", "lr": pytest.approx(0.1), "epochs": 2}
    assert _Toy(preset="paper").hparams["epochs"] == 3 and not _Toy(preset="paper").preset_pending


def test_auto_resolves_from_the_task_profile_with_a_reason():
    method = _Toy().for_task(profile())
    assert method.hparams["preset"] == "digits" and "scale digits" in method.preset_choice.reason
    assert _Toy().for_task(profile(arch="resnet18", shape=(3, 32, 32))).hparams["preset"] == "paper"


def test_unlearn_resolves_a_pending_auto_from_its_context_or_says_what_is_missing():
    ctx = MethodContext(torch.device("cpu"), 0, Recipe(), 10, (1, 8, 8), lambda s: None, task=profile())
    method = _Toy()
    method.unlearn(torch.nn.Linear(2, 2), MethodData("toy", None), ctx)  # type: ignore[arg-type]
    assert method.seen["preset"] == "digits"
    with pytest.raises(ParameterError, match="needs the task profile"):
        _Toy().unlearn(torch.nn.Linear(2, 2), MethodData("toy", None),  # type: ignore[arg-type]
                       MethodContext(torch.device("cpu"), 0, Recipe(), 10, (1, 8, 8), lambda s: None))


def _builtin_methods() -> list[str]:
    return sorted(s.name for s in discover(METHODS) if s.dist == "muaudit" and s.name != "retrain")


@pytest.mark.parametrize("name", _builtin_methods())
@pytest.mark.parametrize("kind", ["random", "full-class"])
def test_no_builtin_uses_cifar_values_on_the_digits_mlp(name, kind):
    cls = load_by_name(METHODS, name).cls
    assert "preset" in {p.name for p in cls.params} and cls.presets, f"{name} declares no presets"
    choice = cls.auto_preset(profile(kind=kind))
    assert choice.name.startswith("digits"), f"{name} picks {choice.name!r} for the digits MLP"
    assert cls(preset=choice.name).hparams["preset"] == choice.name


@pytest.mark.parametrize("name", _builtin_methods())
@pytest.mark.parametrize("kind, expected", [("random", "fmnist"), ("full-class", "fmnist-class")])
def test_every_builtin_has_calibrated_fashion_mnist_presets(name, kind, expected):
    cls = load_by_name(METHODS, name).cls
    assert cls.auto_preset(profile(arch="cnn", shape=(1, 28, 28), kind=kind, dataset="fashion-mnist")).name == expected


@pytest.mark.parametrize("name", _builtin_methods())
def test_every_builtin_keeps_a_published_preset(name):
    cls = load_by_name(METHODS, name).cls
    published = {"paper", "cifar10", "official", "large-scale"}
    assert published & set(cls.presets), f"{name} has no published (paper) preset"


def test_describe_lists_every_parameter_and_preset(capsys):
    assert main(["describe", "finetune", "--task", "digits-class"]) == 0
    out = capsys.readouterr().out
    for needle in ("epochs", "lr", "tuned over", "paper", "digits", "digits-class", "preset 'digits-class'"):
        assert needle in out
    assert main(["list", "methods", "-v"]) == 0
    assert "tuned over" in capsys.readouterr().out
