"""The model zoo: small architectures written out in plain PyTorch (no torchvision).

Every model starts with a :class:`Normalize` layer holding the training split's per-channel mean and standard
deviation as buffers, so inputs stay in ``[0, 1]`` and checkpoints carry their normalisation. Each builder adapts
to the input shape and the class count. Building a model under a seed gives a fresh initialisation of every
layer, which is what the gold retrain requires.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from muaudit.errors import CheckpointError, TaskError


class Normalize(nn.Module):
    """``(x - mean) / std`` with per-channel (or global, for vectors) statistics stored as buffers."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], image: bool) -> None:
        super().__init__()
        shape = (1, -1, 1, 1) if image else (1, -1)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _mlp(shape: tuple[int, ...], n_classes: int, hidden: int = 128, depth: int = 2) -> nn.Sequential:
    dims = [int(torch.tensor(shape).prod())] + [hidden] * depth
    layers: list[nn.Module] = [nn.Flatten()]
    for d_in, d_out in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(d_in, d_out), nn.ReLU()]
    layers.append(nn.Linear(dims[-1], n_classes))
    return nn.Sequential(*layers)


def _image_shape(shape: tuple[int, ...], arch: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise TaskError(f"architecture {arch!r} needs image inputs (C, H, W), got shape {shape}")
    return shape[0], shape[1], shape[2]


def _cnn(shape: tuple[int, ...], n_classes: int, width: int = 32) -> nn.Sequential:
    """LeNet-like: two conv-ReLU-maxpool blocks and two linear layers."""
    c, h, w = _image_shape(shape, "cnn")
    flat = 2 * width * (h // 4) * (w // 4)
    if h // 4 == 0 or w // 4 == 0:
        raise TaskError(f"cnn needs inputs of at least 4x4 pixels, got {h}x{w}")
    return nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(flat, 128), nn.ReLU(), nn.Linear(128, n_classes),
    )


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out), nn.ReLU(),
    )


class AllCNN(nn.Module):
    """All-convolutional net (Springenberg et al.) with BatchNorm, as in the PGU and NatMU code."""

    def __init__(self, shape: tuple[int, ...], n_classes: int, width: int = 96) -> None:
        super().__init__()
        c, _, _ = _image_shape(shape, "allcnn")
        w1, w2 = width, 2 * width
        self.features = nn.Sequential(
            _conv_bn(c, w1, 3), _conv_bn(w1, w1, 3), _conv_bn(w1, w1, 3, stride=2),
            _conv_bn(w1, w2, 3), _conv_bn(w2, w2, 3), _conv_bn(w2, w2, 3, stride=2),
            _conv_bn(w2, w2, 3), _conv_bn(w2, w2, 1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.classifier = nn.Linear(w2, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class SmallVGG(nn.Module):
    """PGU's SmallVGG: three conv-BN-ReLU-maxpool blocks, then dropout-linear-ReLU-dropout-linear.

    ``features[0]``, ``features[4]`` and ``features[8]`` are the convolutions and ``classifier[1]``,
    ``classifier[4]`` the linear layers, matching the layer names of the PGU reference code.
    """

    def __init__(self, shape: tuple[int, ...], n_classes: int, width: int = 64, hidden: int = 256) -> None:
        super().__init__()
        c, h, w = _image_shape(shape, "smallvgg")
        blocks: list[nn.Module] = []
        c_in = c
        for mult in (1, 2, 4):
            blocks += [nn.Conv2d(c_in, width * mult, 3, padding=1), nn.BatchNorm2d(width * mult),
                       nn.ReLU(), nn.MaxPool2d(2)]
            c_in = width * mult
        self.features = nn.Sequential(*blocks)
        flat = c_in * (h // 8) * (w // 8)
        if flat == 0:
            raise TaskError(f"smallvgg needs inputs of at least 8x8 pixels, got {h}x{w}")
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(flat, hidden), nn.ReLU(), nn.Dropout(0.5), nn.Linear(hidden, n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class BasicBlock(nn.Module):
    """ResNet basic block with an optional 1x1 projection shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class ResNet18(nn.Module):
    """ResNet-18 with torchvision's parameter names; CIFAR-style stem (3x3, stride 1, no max-pool) by default."""

    def __init__(self, shape: tuple[int, ...], n_classes: int, width: int = 64, stem: str = "cifar") -> None:
        super().__init__()
        c, _, _ = _image_shape(shape, "resnet18")
        if stem not in ("cifar", "imagenet"):
            raise TypeError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        # "imagenet": torchvision's stem (7x7 stride-2 convolution and a 3x3 max-pool), so that a torchvision
        # ResNet-18 state dict loads as it is (behind the "net." prefix); "cifar" (the default): 3x3, stride 1.
        imagenet = stem == "imagenet"
        self.conv1 = nn.Conv2d(c, width, 7 if imagenet else 3, stride=2 if imagenet else 1,
                               padding=3 if imagenet else 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1) if imagenet else nn.Identity()
        widths = [width, 2 * width, 4 * width, 8 * width]
        layers, c_in = [], width
        for i, c_out in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)))
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mlp": _mlp,
    "cnn": _cnn,
    "allcnn": AllCNN,
    "smallvgg": SmallVGG,
    "resnet18": ResNet18,
}


class ZooModel(nn.Module):
    """A zoo network behind its normalisation layer: ``net(normalize(x))``."""

    def __init__(self, normalize: Normalize, net: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def build_model(
    arch: str,
    input_shape: tuple[int, ...],
    n_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    options: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> ZooModel:
    """Build ``arch`` for the given input shape and class count, freshly initialised under ``seed``.

    ``arch`` is a zoo name or ``factory:MODULE:CALLABLE`` (:mod:`muaudit.factories`): a user's builder called as
    ``build(input_shape, n_classes, **options)``, returning the network without normalisation.
    """
    if arch.startswith(FACTORY_PREFIX):
        from muaudit.factories import resolve_factory

        builder = resolve_factory(arch)
        if seed is not None:
            torch.manual_seed(seed)
        net = _call_builder(arch, builder, input_shape, n_classes, options)
        return ZooModel(Normalize(mean, std, image=len(input_shape) == 3), net)
    if arch not in ARCHITECTURES:
        import difflib

        close = difflib.get_close_matches(arch, list(ARCHITECTURES), n=2)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise TaskError(f"unknown architecture {arch!r}{hint}; known: {', '.join(ARCHITECTURES)}")
    check_options(arch, options or {})
    if seed is not None:
        torch.manual_seed(seed)
    try:
        net = ARCHITECTURES[arch](tuple(input_shape), n_classes, **dict(options or {}))
    except TypeError as exc:
        raise TaskError(f"invalid options for architecture {arch!r}: {exc}") from None
    return ZooModel(Normalize(mean, std, image=len(input_shape) == 3), net)


FACTORY_PREFIX = "factory:"


def _call_builder(arch: str, builder: Callable[..., nn.Module], input_shape: Sequence[int], n_classes: int,
                  options: Mapping[str, Any] | None) -> nn.Module:
    try:
        net = builder(tuple(input_shape), n_classes, **dict(options or {}))
    except TypeError as exc:
        raise TaskError(f"architecture factory {arch[len(FACTORY_PREFIX):]!r} cannot be called as "
                        f"build(input_shape, n_classes, **options): {exc}") from None
    if not isinstance(net, nn.Module):
        raise TaskError(f"architecture factory {arch[len(FACTORY_PREFIX):]!r} returned {type(net).__name__}, "
                        f"not a torch.nn.Module")
    return net


#: Every size option of the zoo's builders and its inclusive range (``depth`` may be 0: a linear model).
OPTION_RANGES: dict[str, tuple[int, int]] = {"hidden": (1, 65_536), "width": (1, 4_096), "depth": (0, 64)}


def check_options(arch: str, options: Mapping[str, Any]) -> None:
    """Reject architecture options that are not integers in their range (a negative width is a task error)."""
    for name, value in options.items():
        if name not in OPTION_RANGES:
            continue  # the builder's own signature rejects unknown names
        low, high = OPTION_RANGES[name]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise TaskError(f"model option {name} of architecture {arch!r} must be an integer between {low} and "
                            f"{high}, got {value!r}")


def check_statistics(model: nn.Module, source: str) -> None:
    """Reject normalisation statistics that make every output NaN or infinite: a standard deviation or a
    BatchNorm running variance that is not positive (non-finite values are rejected on load)."""
    for name, buffer in model.named_buffers():
        if name.endswith("normalize.std") or name == "std":
            if not bool((buffer > 0).all()):
                raise CheckpointError(f"{source}: normalisation std {name!r} must be positive, got "
                                      f"{buffer.flatten().tolist()[:4]}")
        elif name.endswith("running_var") and not bool((buffer >= 0).all()):
            raise CheckpointError(f"{source}: BatchNorm running variance {name!r} has negative entries")


def last_linear_prefix(model: nn.Module) -> str:
    """Name prefix of the last ``nn.Linear`` layer (the classifier head)."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise TaskError("the model has no linear layer")
    return names[-1] + "."
