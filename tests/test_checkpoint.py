"""Checkpoints: .pt and .safetensors round trips, bare state dicts, and refusal of unsafe or broken files."""
from __future__ import annotations

import hashlib
import json
import os
import random
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from muaudit.checkpoint import (
    FORMAT_VERSION,
    META_KEY,
    file_sha256,
    load_checkpoint,
    load_into,
    save_checkpoint,
    state_dict_sha256,
)
from muaudit.errors import CheckpointError
from muaudit.zoo import build_model

FORMATS = [".pt", ".pth", ".safetensors"]


def mlp(seed: int = 0, hidden: int = 16) -> torch.nn.Module:
    return build_model("mlp", (1, 8, 8), 10, [0.3], [0.2], options={"hidden": hidden}, seed=seed)


def cnn(seed: int = 0) -> torch.nn.Module:
    """Has BatchNorm-free convs; ``smallvgg`` below adds BatchNorm buffers (including an int64 counter)."""
    return build_model("smallvgg", (1, 8, 8), 10, [0.3], [0.2], options={"width": 2, "hidden": 4}, seed=seed)


class Payload:
    """Pickles as a call to ``os.system``; loading it with plain pickle would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Opaque:
    """An ordinary custom class instance (no ``__reduce__`` tricks)."""

    def __init__(self) -> None:
        self.weights = torch.zeros(2)


# ------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip_with_metadata(tmp_path, suffix):
    model = cnn()
    meta = {"role": "original", "task": {"name": "digits", "forget_indices": [1, 2]}, "arch": "smallvgg"}
    path = tmp_path / f"model{suffix}"
    sha = save_checkpoint(model, path, meta)
    ckpt = load_checkpoint(path)
    assert ckpt.metadata == {"format_version": FORMAT_VERSION, **meta}
    assert ckpt.sha256 == sha == file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ckpt.path == str(path)
    assert ckpt.state_dict.keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(ckpt.state_dict[name], tensor) and ckpt.state_dict[name].dtype == tensor.dtype, name
    assert state_dict_sha256(ckpt.state_dict) == state_dict_sha256(model.state_dict())


@pytest.mark.parametrize("suffix", FORMATS)
def test_loaded_weights_reproduce_the_model(tmp_path, suffix):
    model = mlp(seed=1).eval()
    path = tmp_path / f"m{suffix}"
    save_checkpoint(model, path, {})
    fresh = load_into(mlp(seed=2).eval(), load_checkpoint(path).state_dict, str(path))
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_state_hash_is_format_independent(tmp_path):
    model = mlp()
    save_checkpoint(model, tmp_path / "a.pt", {"x": 1})
    save_checkpoint(model, tmp_path / "a.safetensors", {"x": 2})
    pt, st = load_checkpoint(tmp_path / "a.pt"), load_checkpoint(tmp_path / "a.safetensors")
    assert state_dict_sha256(pt.state_dict) == state_dict_sha256(st.state_dict)
    assert pt.sha256 != st.sha256
    other = {k: v.clone() for k, v in model.state_dict().items()}
    other["net.1.bias"][0] += 1e-3
    assert state_dict_sha256(other) != state_dict_sha256(model.state_dict())


def test_save_detaches_from_the_model(tmp_path):
    """Saving clones: a non-contiguous, grad-requiring parameter is stored as plain data."""
    model = mlp()
    with torch.no_grad():
        model.net[1].weight.data = model.net[1].weight.data.t().contiguous().t()  # non-contiguous view
    assert not model.net[1].weight.is_contiguous()
    for suffix in (".pt", ".safetensors"):
        save_checkpoint(model, tmp_path / f"nc{suffix}", {})
        loaded = load_checkpoint(tmp_path / f"nc{suffix}").state_dict
        assert torch.equal(loaded["net.1.weight"], model.net[1].weight.detach())


def test_save_creates_parent_directories_and_overwrites(tmp_path):
    path = tmp_path / "deep" / "er" / "m.pt"
    first = save_checkpoint(mlp(seed=1), path, {"n": 1})
    second = save_checkpoint(mlp(seed=2), path, {"n": 2})
    assert first != second and load_checkpoint(path).metadata["n"] == 2


@pytest.mark.parametrize("suffix", FORMATS)
def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path, suffix):
    save_checkpoint(mlp(), tmp_path / f"m{suffix}", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"m{suffix}"]


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_failed_save_keeps_the_old_file_and_cleans_up(tmp_path, suffix, monkeypatch):
    path = tmp_path / f"m{suffix}"
    save_checkpoint(mlp(seed=1), path, {"v": 1})
    before = path.read_bytes()

    def boom(*args, **kwargs):
        Path(args[1]).write_bytes(b"partial")  # the writer got as far as the temporary file
        raise OSError("disk full")

    import safetensors.torch

    monkeypatch.setattr(torch, "save", boom)
    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(mlp(seed=2), path, {"v": 2})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_unserialisable_metadata_writes_nothing(tmp_path):
    with pytest.raises(TypeError):
        save_checkpoint(mlp(), tmp_path / "m.pt", {"bad": object()})
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ bare state dicts
def test_bare_torch_state_dict_loads_without_metadata(tmp_path):
    model = cnn()
    path = tmp_path / "bare.pt"
    torch.save(model.state_dict(), path)
    ckpt = load_checkpoint(path)
    assert ckpt.metadata is None
    assert state_dict_sha256(ckpt.state_dict) == state_dict_sha256(model.state_dict())
    load_into(cnn(seed=5), ckpt.state_dict, str(path))


def test_bare_safetensors_and_lightning_style_files(tmp_path):
    model = mlp()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "bare.safetensors"))
    assert load_checkpoint(tmp_path / "bare.safetensors").metadata is None
    torch.save({"state_dict": OrderedDict(model.state_dict()), "epoch": 3, "lr": 0.1}, tmp_path / "pl.ckpt")
    ckpt = load_checkpoint(tmp_path / "pl.ckpt")
    assert ckpt.metadata is None and ckpt.state_dict.keys() == model.state_dict().keys()


# ------------------------------------------------------------------------------------------ refusals
def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"net.weight": torch.zeros(2), "payload": Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="evil.pt: refused to load") as info:
        load_checkpoint(path)
    assert "system" in str(info.value)
    assert "weights_only" in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()


def test_pickled_custom_object_is_refused(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save(Opaque(), path)
    with pytest.raises(CheckpointError, match="refused to load.*Opaque"):
        load_checkpoint(path)
    whole_model = tmp_path / "model.pt"
    torch.save(mlp(), whole_model)  # a pickled nn.Module, not a state dict
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(whole_model)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_raw_pickle_file_is_refused(tmp_path):
    import pickle

    marker = tmp_path / "pwned"
    path = tmp_path / "raw.pt"
    with open(path, "wb") as handle:
        pickle.dump({"w": Payload(marker)}, handle)
    with pytest.raises(CheckpointError, match="raw.pt"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused_by_name(tmp_path, suffix, value):
    model = mlp()
    with torch.no_grad():
        model.net[3].bias[2] = value
    path = tmp_path / f"nan{suffix}"
    with pytest.raises(CheckpointError, match=r"parameter 'net\.3\.bias' contains NaN or infinite"):
        save_checkpoint(model, path, {})  # never written
    assert not path.exists() and not list(tmp_path.iterdir())
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if suffix == ".pt":
        torch.save({"state_dict": state, "muaudit_metadata": "{}"}, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path), metadata={"muaudit_metadata": "{}"})
    with pytest.raises(CheckpointError, match=r"parameter 'net\.3\.bias' contains NaN or infinite"):
        load_checkpoint(path)


def test_non_finite_weights_in_a_bare_state_dict(tmp_path):
    state = mlp().state_dict()
    state["net.5.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="net.5.weight"):
        load_checkpoint(tmp_path / "bare.pt")


@pytest.mark.parametrize(
    "content, fragment",
    [
        ([torch.zeros(2)], "expected a state dict, found list"),
        (torch.zeros(2), "expected a state dict, found Tensor"),
        ({}, "empty"),
        ({"w": torch.zeros(2), "step": 3}, "entry 'step'"),
        ({"state_dict": {"w": "text"}}, "entry 'w'"),
        ({"state_dict": {"w": torch.zeros(1)}, META_KEY: "{not json"}, "metadata is not valid JSON"),
        ({"state_dict": {"w": torch.zeros(1)}, META_KEY: "[1, 2]"}, "metadata"),
    ],
)
def test_malformed_torch_checkpoints(tmp_path, content, fragment):
    path = tmp_path / "bad.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=fragment):
        load_checkpoint(path)


def test_non_dict_metadata_in_safetensors(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={META_KEY: '"just a string"'})
    with pytest.raises(CheckpointError, match="metadata"):
        load_checkpoint(path)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_files_are_a_checkpoint_error(tmp_path, suffix, damage):
    path = tmp_path / f"m{suffix}"
    save_checkpoint(mlp(), path, {"a": 1})
    raw = path.read_bytes()
    garbage = random.Random(0).randbytes(2048)
    path.write_bytes({"truncate": raw[: len(raw) // 2], "garbage": garbage, "empty": b""}[damage])
    with pytest.raises(CheckpointError, match=str(path.name)):
        load_checkpoint(path)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_damaged_files_never_raise_anything_but_checkpoint_error(tmp_path, suffix):
    """Random bytes, truncations and byte flips: either a clean load or one CheckpointError, never a crash."""
    source = tmp_path / f"m{suffix}"
    save_checkpoint(mlp(hidden=4), source, {"a": 1})
    raw = source.read_bytes()
    rng = random.Random(1234)
    path = tmp_path / f"damaged{suffix}"
    for i in range(120):
        if i % 3 == 0:
            content = rng.randbytes(rng.randint(0, 400))
        elif i % 3 == 1:
            content = raw[: rng.randint(0, len(raw) - 1)]
        else:
            flipped = bytearray(raw)
            for _ in range(rng.randint(1, 6)):
                flipped[rng.randrange(len(flipped))] = rng.getrandbits(8)
            content = bytes(flipped)
        path.write_bytes(content)
        try:
            load_checkpoint(path)
        except CheckpointError as exc:
            assert "\n" not in str(exc)


def test_safetensors_with_a_corrupt_header(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(mlp(), path, {})
    raw = bytearray(path.read_bytes())
    raw[8:20] = b"\xff" * 12  # inside the JSON header
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="m.safetensors"):
        load_checkpoint(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path)


# ------------------------------------------------------------------------------------------ load_into
def test_wrong_architecture_is_refused(tmp_path):
    save_checkpoint(mlp(), tmp_path / "mlp.pt", {})
    state = load_checkpoint(tmp_path / "mlp.pt").state_dict
    with pytest.raises(CheckpointError, match=r"mlp.pt: does not match the architecture \(missing"):
        load_into(cnn(), state, str(tmp_path / "mlp.pt"))


def test_wrong_width_is_refused_with_the_shapes():
    state = mlp(hidden=16).state_dict()
    with pytest.raises(CheckpointError, match=r"'net.1.weight' has shape \(16, 64\), expected \(32, 64\)"):
        load_into(mlp(hidden=32), state, "src")


def test_missing_and_unexpected_keys_are_counted():
    target = mlp()
    state = dict(target.state_dict())
    state.pop("net.5.bias")
    with pytest.raises(CheckpointError, match="missing 'net.5.bias', 1 missing and 0 unexpected"):
        load_into(target, state, "src")
    state = {**target.state_dict(), "extra.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="unexpected 'extra.weight', 0 missing and 1 unexpected"):
        load_into(target, state, "src")


def test_failed_load_into_leaves_the_model_untouched():
    target = mlp(seed=1)
    before = state_dict_sha256(target.state_dict())
    state = {k: torch.zeros_like(v) for k, v in mlp(seed=2).state_dict().items()}
    state.pop("net.1.weight")
    with pytest.raises(CheckpointError):
        load_into(target, state, "src")
    assert state_dict_sha256(target.state_dict()) == before


def test_file_sha256_matches_hashlib(tmp_path):
    path = tmp_path / "blob.bin"
    data = os.urandom(3 * (1 << 20) + 17)  # crosses the 1 MiB read blocks
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert file_sha256(str(path)) == hashlib.sha256(data).hexdigest()


def test_metadata_is_plain_json_in_both_formats(tmp_path):
    save_checkpoint(mlp(), tmp_path / "m.safetensors", {"k": [1, 2]})
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as handle:
        assert json.loads(handle.metadata()[META_KEY]) == {"format_version": FORMAT_VERSION, "k": [1, 2]}
    save_checkpoint(mlp(), tmp_path / "m.pt", {"k": [1, 2]})
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    assert set(raw) == {"state_dict", META_KEY} and isinstance(raw[META_KEY], str)
