"""The model zoo: every architecture adapts to input shape and class count, and seeds give fresh initialisations."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from muaudit.errors import TaskError
from muaudit.zoo import ARCHITECTURES, Normalize, ZooModel, build_model, last_linear_prefix

IMAGE_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
ARCHS = sorted(ARCHITECTURES)
# narrow versions keep the repeated builds fast on a CPU (the shape matrix uses the default widths)
NARROW = {"mlp": {"hidden": 16}, "cnn": {"width": 4}, "allcnn": {"width": 4}, "smallvgg": {"width": 4, "hidden": 16},
          "resnet18": {"width": 4}}


def _stats(shape: tuple[int, ...]) -> tuple[list[float], list[float]]:
    channels = shape[0] if len(shape) == 3 else 1
    return [0.5] * channels, [0.25] * channels


def build(arch: str, shape: tuple[int, ...], n_classes: int = 10, seed: int | None = 0, **options) -> ZooModel:
    mean, std = _stats(shape)
    return build_model(arch, shape, n_classes, mean, std, options=options, seed=seed)


def _is_batchnorm_param(model: nn.Module, name: str) -> bool:
    module = model.get_submodule(name.rsplit(".", 1)[0])
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


@pytest.mark.parametrize("n_classes", [10, 100])
@pytest.mark.parametrize("shape", IMAGE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_fits_every_input(arch, shape, n_classes):
    model = build(arch, shape, n_classes).eval()
    x = torch.rand(2, *shape)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, n_classes) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    head = model.get_submodule(last_linear_prefix(model)[:-1])
    assert isinstance(head, nn.Linear) and head.out_features == n_classes


def test_resnet18_has_the_cifar_resnet18_size():
    model = build("resnet18", (3, 32, 32), 10)
    assert 11_100_000 < sum(p.numel() for p in model.parameters()) < 11_200_000


@pytest.mark.parametrize("arch", ARCHS)
def test_training_mode_forward_and_backward(arch):
    model = build(arch, (3, 32, 32), 10, **NARROW[arch])
    model.train()
    loss = nn.functional.cross_entropy(model(torch.rand(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("dim", [1, 6, 64])
def test_mlp_on_feature_vectors(dim):
    model = build("mlp", (dim,), 3)
    assert model(torch.rand(5, dim)).shape == (5, 3)
    assert model.normalize.mean.shape == (1, 1)


def test_mlp_options_set_width_and_depth():
    model = build("mlp", (4,), 2, hidden=7, depth=3)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4, 7), (7, 7), (7, 7), (7, 2)]
    assert [m.out_features for m in build("mlp", (4,), 2, depth=0).modules() if isinstance(m, nn.Linear)] == [2]


@pytest.mark.parametrize("arch", ARCHS)
def test_same_seed_gives_identical_weights(arch):
    torch.manual_seed(123)  # the global state before the build must not matter
    first = build(arch, (3, 32, 32), 10, seed=7, **NARROW[arch]).state_dict()
    torch.rand(100)
    second = build(arch, (3, 32, 32), 10, seed=7, **NARROW[arch]).state_dict()
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


@pytest.mark.parametrize("arch", ARCHS)
def test_different_seeds_give_different_weights_in_every_layer(arch):
    """Every randomly initialised tensor differs (BatchNorm's affine parameters start at 1 and 0 by design)."""
    first = build(arch, (3, 32, 32), 10, seed=1, **NARROW[arch])
    second = build(arch, (3, 32, 32), 10, seed=2, **NARROW[arch])
    other = dict(second.named_parameters())
    checked = 0
    for name, param in first.named_parameters():
        if _is_batchnorm_param(first, name):
            assert torch.equal(param, other[name]), name
            continue
        assert not torch.equal(param, other[name]), f"{arch}: {name} is the same under seeds 1 and 2"
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("arch", ARCHS)
def test_unseeded_builds_differ(arch):
    first = build(arch, (1, 8, 8), 10, seed=None, **NARROW[arch])
    second = build(arch, (1, 8, 8), 10, seed=None, **NARROW[arch])
    head = last_linear_prefix(first) + "weight"
    assert not torch.equal(first.state_dict()[head], second.state_dict()[head])


def test_normalize_layer_carries_the_statistics():
    model = build_model("cnn", (3, 8, 8), 10, mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 0.25], seed=0)
    state = model.state_dict()
    assert torch.allclose(state["normalize.mean"].flatten(), torch.tensor([0.1, 0.2, 0.3]))
    assert torch.allclose(state["normalize.std"].flatten(), torch.tensor([0.5, 0.5, 0.25]))
    x = torch.full((1, 3, 2, 2), 0.3)
    assert torch.allclose(Normalize([0.1, 0.2, 0.3], [0.5, 0.5, 0.25], image=True)(x)[0, :, 0, 0],
                          torch.tensor([0.4, 0.2, 0.0]))
    assert not any(name.startswith("normalize") for name, _ in model.named_parameters())


def test_model_is_net_after_normalize():
    model = build("cnn", (1, 8, 8), 10).eval()
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), model.net((x - 0.5) / 0.25))


@pytest.mark.parametrize("arch", ["cnn", "allcnn", "smallvgg", "resnet18"])
def test_image_architectures_refuse_vectors(arch):
    with pytest.raises(TaskError, match=f"{arch}.*image inputs"):
        build(arch, (64,), 10)


@pytest.mark.parametrize("arch, shape", [("smallvgg", (1, 4, 4)), ("cnn", (1, 3, 3)), ("cnn", (1, 28, 2))])
def test_too_small_images_are_refused(arch, shape):
    with pytest.raises(TaskError, match=f"{arch} needs inputs of at least"):
        build(arch, shape, 10)


def test_unknown_architecture_suggests():
    with pytest.raises(TaskError, match=r"unknown architecture 'resnet'.*did you mean resnet18.*known: mlp"):
        build("resnet", (3, 32, 32), 10)
    with pytest.raises(TaskError, match=r"unknown architecture 'transformer'; known:"):
        build("transformer", (3, 32, 32), 10)


def test_invalid_options_are_a_task_error():
    with pytest.raises(TaskError, match="invalid options for architecture 'cnn'.*depth"):
        build("cnn", (1, 8, 8), 10, depth=3)


def test_width_option_scales_convolutions():
    narrow = build("resnet18", (3, 32, 32), 10, width=8)
    assert narrow.net.conv1.out_channels == 8 and narrow.net.fc.in_features == 64
    assert build("allcnn", (3, 32, 32), 10, width=12).net.classifier.in_features == 24


def test_smallvgg_layer_names_match_the_pgu_code():
    net = build("smallvgg", (3, 32, 32), 10, **NARROW["smallvgg"]).net
    assert [type(net.features[i]) for i in (0, 4, 8)] == [nn.Conv2d] * 3
    assert [type(net.classifier[i]) for i in (1, 4)] == [nn.Linear] * 2


@pytest.mark.parametrize("arch, prefix", [("mlp", "net.5."), ("cnn", "net.9."), ("allcnn", "net.classifier."),
                                          ("smallvgg", "net.classifier.4."), ("resnet18", "net.fc.")])
def test_last_linear_prefix(arch, prefix):
    model = build(arch, (1, 28, 28), 10, **NARROW[arch])
    assert last_linear_prefix(model) == prefix
    assert f"{prefix}weight" in model.state_dict()


def test_last_linear_prefix_needs_a_linear_layer():
    with pytest.raises(TaskError, match="no linear layer"):
        last_linear_prefix(nn.Sequential(nn.ReLU()))
