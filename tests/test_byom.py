"""Bring your own model (issue 13): foreign state dicts, key maps, declared normalisation, architecture factories,
and the README walk-through (your own split, your own training loop, then the audit)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from muaudit.adapt import StateAdapter, adapt, suggest
from muaudit.cli import main
from muaudit.errors import CheckpointError
from muaudit.zoo import build_model

ROOT = Path(__file__).resolve().parents[1]


def zoo_mlp() -> nn.Module:
    return build_model("mlp", (1, 8, 8), 10, (0.3,), (0.4,), seed=0)


def plain_mlp(flatten: bool) -> nn.Sequential:
    """A user's MLP written without muaudit: the zoo's layer sizes, no normalisation layer."""
    torch.manual_seed(1)
    layers = [nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)]
    return nn.Sequential(*([nn.Flatten()] if flatten else []), *layers)


def test_a_plain_mlp_loads_with_its_normalisation_declared():
    template = zoo_mlp().state_dict()
    state = plain_mlp(flatten=True).state_dict()
    with pytest.raises(CheckpointError, match="--normalize"):
        adapt(state, template, StateAdapter(), "mlp.pt")
    adapted = adapt(state, template, StateAdapter(normalize="none"), "mlp.pt")
    assert set(adapted.state) == set(template)
    assert "added muaudit's 'net.' prefix" in adapted.notes
    assert torch.equal(adapted.state["normalize.std"], torch.ones_like(template["normalize.std"]))
    model = zoo_mlp()
    model.load_state_dict(adapted.state)
    x = torch.rand(5, 1, 8, 8)
    assert torch.allclose(model(x), plain_mlp(flatten=True)(x))  # the same function as the user's network


def test_layer_indices_shifted_by_a_missing_flatten_map_by_order():
    template = zoo_mlp().state_dict()
    state = plain_mlp(flatten=False).state_dict()
    assert suggest(state, template) == "--key-map order --normalize none|data|MEAN/STD"
    adapted = adapt(state, template, StateAdapter(key_map="order", normalize="data"), "mlp.pt")
    assert torch.equal(adapted.state["net.1.weight"], state["0.weight"])
    assert torch.equal(adapted.state["normalize.mean"], template["normalize.mean"])


def test_order_refuses_a_shape_mismatch():
    state = {"0.weight": torch.zeros(3, 3)}
    with pytest.raises(CheckpointError, match="same shapes"):
        adapt(state, zoo_mlp().state_dict(), StateAdapter(key_map="order"), "x.pt")


class TorchvisionBlock(nn.Module):
    """torchvision's BasicBlock layout (conv1, bn1, conv2, bn2, downsample)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                           if stride != 1 or c_in != c_out else None)


class TorchvisionResNet18(nn.Module):
    """torchvision's ResNet-18 parameter layout (7x7 stem, max-pool, fc), at a small width for speed."""

    def __init__(self, width: int = 8, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        c_in = width
        for i, c_out in enumerate([width, 2 * width, 4 * width, 8 * width]):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(TorchvisionBlock(c_in, c_out, stride),
                                                         TorchvisionBlock(c_out, c_out, 1)))
            c_in = c_out
        self.fc = nn.Linear(c_in, n_classes)


def _randomised(module: nn.Module) -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    return {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in module.state_dict().items()}


def test_a_torchvision_resnet18_state_dict_loads_through_the_key_map():
    state = _randomised(TorchvisionResNet18())
    model = build_model("resnet18", (3, 32, 32), 10, (0.5,) * 3, (0.25,) * 3, {"width": 8, "stem": "imagenet"}, 0)
    template = model.state_dict()
    assert suggest(state, template) == "--normalize none|data|MEAN/STD"  # the layout is the zoo's: no map needed
    adapted = adapt(state, template, StateAdapter(key_map="torchvision-resnet18",
                                                  normalize=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))), "tv.pt")
    model.load_state_dict(adapted.state)
    assert torch.equal(model.state_dict()["net.layer2.0.downsample.0.weight"], state["layer2.0.downsample.0.weight"])


def test_a_kuangliu_resnet18_state_dict_loads_through_its_key_map():
    renamed = {k.replace(".downsample.", ".shortcut.").replace("fc.", "linear."): v
               for k, v in _randomised(TorchvisionResNet18()).items()}
    model = build_model("resnet18", (3, 32, 32), 10, (0.5,) * 3, (0.25,) * 3, {"width": 8, "stem": "imagenet"}, 0)
    adapted = adapt(renamed, model.state_dict(), StateAdapter(key_map="kuangliu-resnet18", normalize="data"), "k.pt")
    model.load_state_dict(adapted.state)
    assert torch.equal(model.state_dict()["net.fc.weight"], renamed["linear.weight"])


def test_a_key_map_file(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"rename": {"head.weight": "5.weight", "head.bias": "5.bias"},
                                "patterns": [["^body\\.", ""]]}))
    user = {("head." + k[2:] if k.startswith("5.") else "body." + k): v
            for k, v in plain_mlp(flatten=True).state_dict().items()}
    adapted = adapt(user, zoo_mlp().state_dict(), StateAdapter(key_map=str(path), normalize="none"), "u.pt")
    assert set(adapted.state) == set(zoo_mlp().state_dict())
    path.write_text('{"patterns": [["(", "x"]]}')
    with pytest.raises(CheckpointError, match="invalid pattern"):
        adapt(user, zoo_mlp().state_dict(), StateAdapter(key_map=str(path)), "u.pt")


# ----------------------------------------------------------------------------------- the walk-through
BUILDER = '''
from torch import nn


def build(input_shape, n_classes, hidden=32):
    """My own network, without normalisation (the task file says normalize = "none": raw pixels)."""
    size = 1
    for d in input_shape:
        size *= d
    return nn.Sequential(nn.Flatten(), nn.Linear(size, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))
'''

TASK = '''
name = "my-digits"
seed = 0

[dataset]
name = "npz"
root = "my_data.npz"          # relative to this file

[forget]
kind = "random"
count = 60

[model]
arch = "factory:my_models:build"
normalize = "none"            # I trained on raw pixels: the gold models will too
options = {hidden = 32}

[recipe]
epochs = 8
batch_size = 64
optimizer = "sgd"
lr = 0.05
momentum = 0.9
weight_decay = 5e-4
schedule = "constant"
augment = "none"
'''


def _write_project(folder: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    np.savez(folder / "my_data.npz", x_train=x[:1200], y_train=y[:1200], x_test=x[1200:], y_test=y[1200:])
    (folder / "my_models.py").write_text(textwrap.dedent(BUILDER))
    (folder / "task.toml").write_text(textwrap.dedent(TASK))


def _train_my_way(folder: Path) -> Path:
    """The user's own training loop, following the task's recipe (the gold models are trained with it)."""
    sys.path.insert(0, str(folder))
    try:
        from my_models import build
    finally:
        sys.path.remove(str(folder))
    from muaudit.task import resolve_task

    task = resolve_task(str(folder / "task.toml"))
    data = task.dataset.load()
    train = task.materialise(data).training_split(data)
    torch.manual_seed(0)
    net = build((1, 8, 8), 10, hidden=32)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    for _ in range(task.recipe.epochs):
        for xb, yb in train.batches(64, shuffle=True, generator=generator):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xb), yb).backward()
            opt.step()
    path = folder / "my_net.pt"
    torch.save(net.state_dict(), path)
    return path


def test_walk_through_your_own_split_model_and_training_loop(tmp_path, monkeypatch):
    _write_project(tmp_path)
    checkpoint = _train_my_way(tmp_path)
    monkeypatch.chdir(tmp_path)  # the builder module lives in the working directory
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(ROOT / "methods"), str(ROOT / "attacks"), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-m", "muaudit", "score", "--task", "task.toml", "--model", str(checkpoint),
            "--arch-factory", "my_models:build", "--method", "finetune",
            "--method-arg", "epochs=1", "--attacks", "loss", "--cache-dir", str(tmp_path / "cache"), "--json",
            "--quiet"]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    card = json.loads(result.stdout)
    assert card["provenance"]["original"]["adapted"] == ["added muaudit's 'net.' prefix",
                                                         "normalisation declared: the task's (mean [0.0], std [1.0])"]
    assert card["task"]["arch"] == "factory:my_models:build"
    forget = card["readouts"][[r["name"] for r in card["readouts"]].index("forget_error")]
    assert forget["original"] < forget["gold"]  # my model memorised D_f; the gold models never saw it

    assert card["signal"]["warnings"] == []  # trained with the task's recipe and split: consistent with gold


def test_an_edited_builder_is_a_new_architecture(tmp_path, monkeypatch):
    from muaudit.factories import factory_arch, factory_digest

    (tmp_path / "edit_me.py").write_text("def build(shape, k):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    arch = factory_arch("edit_me:build")
    before = factory_digest(arch)
    import importlib

    import edit_me

    (tmp_path / "edit_me.py").write_text("def build(shape, k):\n    return 1\n")
    importlib.reload(edit_me)
    assert factory_digest(arch) != before


def test_a_notebook_builder_is_registered():
    from muaudit.factories import factory_arch, resolve_factory

    def build(input_shape, n_classes):
        return nn.Linear(4, n_classes)

    arch = factory_arch(build)
    assert arch.startswith("factory:") and resolve_factory(arch) is build
    model = build_model(arch, (4,), 3, (0.0,), (1.0,), seed=0)
    assert model(torch.zeros(2, 4)).shape == (2, 3)


@pytest.mark.parametrize("argv, fragment", [
    (["--arch-factory", "no_such_module_xyz:build"], "cannot import"),
    (["--arch-factory", "nocolon"], "MODULE:CALLABLE"),
    (["--normalize", "1,2/0"], "--normalize"),
    (["--key-map", "/no/such/map.json"], "not a built-in map"),
])
def test_bad_model_options_are_one_line(argv, fragment, cache_dir, capsys):
    code = main(["score", "--method", "finetune", "--cache-dir", str(cache_dir), "--quiet", *argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and fragment in lines[0], err
