"""The content-addressed tensor cache: hits, misses, and entries that must never be used."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from muaudit.cache import CACHE_SCHEMA, TensorCache, default_cache_dir
from muaudit.checkpoint import state_dict_sha256

CONFIG = {"role": "gold", "task_hash": "ab" * 32, "seed": 3}


def tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"w": torch.randn(4, 3, generator=gen), "b": torch.arange(5), "flag": torch.tensor([True, False]),
            "half": torch.randn(2, generator=gen).to(torch.bfloat16)}


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == want[name].dtype and torch.equal(got[name], want[name]), name


@pytest.fixture
def cache(tmp_path) -> TensorCache:
    return TensorCache(tmp_path / "cache")


def test_round_trip(cache):
    path = cache.put(CONFIG, tensors(), {"train_seconds": 1.5, "versions": {"torch": "x"}})
    assert path == cache.path(CONFIG) and path.is_file() and path.suffix == ".safetensors"
    hit = cache.get(CONFIG)
    assert hit is not None
    got, extra = hit
    assert_same(got, tensors())
    assert extra == {"train_seconds": 1.5, "versions": {"torch": "x"}}


def test_extra_defaults_to_empty(cache):
    cache.put(CONFIG, tensors())
    assert cache.get(CONFIG)[1] == {}


def test_empty_cache_misses(cache):
    assert cache.get(CONFIG) is None
    assert not cache.root.exists()  # a lookup creates nothing


@pytest.mark.parametrize("change", [{"seed": 4}, {"role": "original"}, {"task_hash": "cd" * 32}, {"extra": 1}])
def test_different_config_misses(cache, change):
    cache.put(CONFIG, tensors())
    assert cache.get({**CONFIG, **change}) is None
    sub = {k: v for k, v in CONFIG.items() if k != "seed"}
    assert cache.get(sub) is None


def test_key_is_canonical_and_content_addressed(cache):
    reordered = dict(reversed(list(CONFIG.items())))
    assert TensorCache.key(CONFIG) == TensorCache.key(reordered)
    assert cache.path(CONFIG) == cache.path(reordered)
    key = TensorCache.key(CONFIG)
    assert len(key) == 64 and cache.path(CONFIG) == cache.root / key[:2] / f"{key}.safetensors"
    assert TensorCache.key({**CONFIG, "seed": 4}) != key
    cache.put(CONFIG, tensors())
    assert cache.get(reordered) is not None


def test_put_overwrites(cache):
    cache.put(CONFIG, {"w": torch.zeros(2)}, {"n": 1})
    cache.put(CONFIG, {"w": torch.ones(2)}, {"n": 2})
    got, extra = cache.get(CONFIG)
    assert torch.equal(got["w"], torch.ones(2)) and extra == {"n": 2}


def test_put_stores_copies_of_non_contiguous_tensors(cache):
    base = torch.arange(12.0).reshape(3, 4)
    view = base.t()
    cache.put(CONFIG, {"v": view, "p": torch.nn.Parameter(torch.ones(2))})
    base.zero_()
    got, _ = cache.get(CONFIG)
    assert torch.equal(got["v"], torch.arange(12.0).reshape(3, 4).t()) and not got["p"].requires_grad


def test_put_leaves_no_temporary_files(cache):
    cache.put(CONFIG, tensors())
    cache.put({**CONFIG, "seed": 9}, tensors())
    files = [p for p in cache.root.rglob("*") if p.is_file()]
    assert len(files) == 2 and all(p.suffix == ".safetensors" for p in files)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "header"])
def test_corrupt_entry_is_a_miss(cache, damage):
    path = cache.put(CONFIG, tensors())
    raw = path.read_bytes()
    if damage == "truncate":
        content = raw[: len(raw) - 7]
    elif damage == "garbage":
        content = os.urandom(len(raw))
    elif damage == "empty":
        content = b""
    else:
        content = raw[:8] + b"{" * 10 + raw[18:]
    path.write_bytes(content)
    assert cache.get(CONFIG) is None
    cache.put(CONFIG, tensors())  # and it can be rebuilt in place
    assert_same(cache.get(CONFIG)[0], tensors())


@pytest.mark.parametrize("offset", [-1, -5, -40])
def test_damaged_tensor_data_is_a_miss(cache, offset):
    """A flipped byte in the data section still parses as safetensors; the stored digest catches it."""
    path = cache.put(CONFIG, {"w": torch.arange(16.0)})
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))
    assert cache.get(CONFIG) is None


def test_entry_without_a_digest_is_a_miss(cache):
    path = cache.path(CONFIG)
    path.parent.mkdir(parents=True)
    header = {"config": {"cache_schema": CACHE_SCHEMA, **CONFIG}, "extra": {}}
    save_file({"w": torch.zeros(2)}, str(path), metadata={"muaudit_cache": json.dumps(header)})
    assert cache.get(CONFIG) is None


def test_entry_copied_under_another_key_is_a_miss(cache):
    path = cache.put(CONFIG, tensors())
    other = {**CONFIG, "seed": 99}
    target = cache.path(other)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, target)
    assert cache.get(other) is None


@pytest.mark.parametrize(
    "metadata",
    [None, {}, {"muaudit_cache": "not json"}, {"muaudit_cache": "[1, 2]"}, {"muaudit_cache": '"text"'},
     {"muaudit_cache": '{"config": 3}'}, {"muaudit_cache": '{"config": {}, "extra": 5}'}],
)
def test_foreign_or_malformed_headers_are_a_miss(cache, metadata):
    path = cache.path(CONFIG)
    path.parent.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(path), metadata=metadata)
    assert cache.get(CONFIG) is None


def test_non_dict_extra_is_a_miss(cache):
    path = cache.path(CONFIG)
    path.parent.mkdir(parents=True)
    header = {"config": {"cache_schema": CACHE_SCHEMA, **CONFIG}, "extra": [1],
              "sha256": state_dict_sha256({"w": torch.zeros(2)})}
    save_file({"w": torch.zeros(2)}, str(path), metadata={"muaudit_cache": json.dumps(header)})
    assert cache.get(CONFIG) is None
    header["extra"] = {"ok": True}
    save_file({"w": torch.zeros(2)}, str(path), metadata={"muaudit_cache": json.dumps(header)})
    assert cache.get(CONFIG)[1] == {"ok": True}


def test_stored_header_holds_the_config(cache):
    from safetensors import safe_open

    path = cache.put(CONFIG, {"w": torch.zeros(1)}, {"note": "x"})
    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()["muaudit_cache"])
    assert header == {"config": {"cache_schema": CACHE_SCHEMA, **CONFIG}, "extra": {"note": "x"},
                      "sha256": state_dict_sha256({"w": torch.zeros(1)})}


def test_directory_in_place_of_an_entry_is_a_miss(cache):
    cache.path(CONFIG).mkdir(parents=True)
    assert cache.get(CONFIG) is None


def test_unreadable_entry_is_a_miss(cache, monkeypatch):
    path = cache.put(CONFIG, tensors())
    import safetensors.torch

    def denied(*args, **kwargs):
        raise PermissionError(f"denied: {path}")

    monkeypatch.setattr(safetensors.torch, "safe_open", denied)
    assert cache.get(CONFIG) is None


def test_default_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("MUAUDIT_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    assert TensorCache().root == tmp_path / "explicit"
    monkeypatch.delenv("MUAUDIT_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "xdg" / "muaudit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == Path(tmp_path / "home" / ".cache" / "muaudit")
    monkeypatch.setenv("MUAUDIT_CACHE_DIR", "")
    assert default_cache_dir() == Path(tmp_path / "home" / ".cache" / "muaudit")


def test_root_accepts_strings(tmp_path):
    cache = TensorCache(str(tmp_path))
    cache.put(CONFIG, {"w": torch.zeros(1)})
    assert TensorCache(tmp_path).get(CONFIG) is not None


def test_config_with_tuples_and_nested_values_hits(cache):
    config = {"task": {"forget": (1, 2, 3), "recipe": {"lr": 0.1}}, "seed": 0, "note": None}
    cache.put(config, {"w": torch.zeros(1)})
    assert cache.get(config) is not None
    assert cache.get({**config, "task": {"forget": (1, 2), "recipe": {"lr": 0.1}}}) is None
