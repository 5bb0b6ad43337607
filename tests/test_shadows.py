"""The shadow-model bank: pool layout, requests, training, caching, validation, logits and derived models."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from muaudit.cache import TensorCache
from muaudit.data import load_dataset
from muaudit.errors import PluginValidationError
from muaudit.shadows import ModelRequest, ShadowBank
from muaudit.task import NAMED_TASKS, ModelSpec, Recipe
from muaudit.training import predict_logits, train_from_scratch
from muaudit.zoo import build_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def task(data):
    return replace(NAMED_TASKS["digits"], recipe=Recipe(epochs=2)).materialise(data)


def _requests(bank: ShadowBank, count: int = 4, role: str = "shadow") -> list[ModelRequest]:
    keep = ShadowBank.keep_matrix(count, bank.n_train, seed=3)
    return [ModelRequest(role, np.flatnonzero(keep[m]), seed=m) for m in range(count)]


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_pool_is_training_split_then_test_split(task, data, tmp_path):
    bank = ShadowBank(task, data, TensorCache(tmp_path), CPU)
    assert bank.n_train == len(data.train) and len(bank.pool) == len(data.train) + len(data.test)
    j = np.array([0, 5, len(data.test) - 1])
    assert torch.equal(bank.pool.x[bank.test_index(j)], data.test.x[j])
    assert torch.equal(bank.pool.y[:bank.n_train], task.training_split(data).y)
    with pytest.raises(ValueError, match="test indices"):
        bank.test_index(len(data.test))


def test_pool_carries_poisoned_labels_on_label_flip_tasks(data, tmp_path):
    poison = NAMED_TASKS["digits-poison"].materialise(data)
    bank = ShadowBank(poison, data, TensorCache(tmp_path), CPU)
    flipped = list(poison.forget_indices)
    assert torch.equal(bank.pool.y[flipped], torch.tensor(poison.poison_labels))
    assert not torch.equal(bank.pool.y[flipped], data.train.y[flipped])


def test_model_request_normalises_validates_and_hashes():
    a = ModelRequest("shadow", np.array([5, 1, 3]), seed=2)
    assert a.indices.tolist() == [1, 3, 5] and a.indices.dtype == np.int64 and not a.indices.flags.writeable
    assert a == ModelRequest("shadow", np.array([1, 3, 5]), 2) and len({a, ModelRequest("shadow", [1, 3, 5], 2)}) == 1
    assert a != ModelRequest("shadow", np.array([1, 3, 5]), 3)
    config = a.config()
    assert config["role"] == "shadow" and config["seed"] == 2 and config["count"] == 3
    assert len(config["indices_sha256"]) == 64
    for bad in ([1, 1, 2], [], [-1, 2], [0.5, 1.0]):
        with pytest.raises(ValueError):
            ModelRequest("shadow", np.array(bad), 0)


def test_keep_matrix_is_balanced_and_seeded():
    keep = ShadowBank.keep_matrix(8, 50, seed=1)
    assert keep.dtype == bool and keep.shape == (8, 50)
    assert (keep.sum(0) == 4).all()
    assert np.array_equal(keep, ShadowBank.keep_matrix(8, 50, seed=1))
    assert not np.array_equal(keep, ShadowBank.keep_matrix(8, 50, seed=2))
    with pytest.raises(ValueError, match="even"):
        ShadowBank.keep_matrix(7, 50, seed=1)


def test_models_are_trained_together_cached_and_reloaded(task, data, tmp_path):
    bank = ShadowBank(task, data, TensorCache(tmp_path), CPU)
    assert bank.trainer == "vmap"
    requests = _requests(bank)
    first = bank.models(requests)
    assert bank.n_trained == 4 and all(not m.training for m in first)
    meta = bank.metadata(requests[0])
    assert meta["trainer"] == "vmap" and meta["train_seconds"] > 0 and meta["batch_models"] == 4
    again = ShadowBank(task, data, TensorCache(tmp_path), CPU)
    second = again.models(requests)
    assert again.n_trained == 0
    assert all(_equal(a, b) for a, b in zip(first, second))
    # the vectorised model is the sequential recipe on the same subset, up to float rounding
    slow = train_from_scratch(task, data, bank.pool.subset(requests[1].indices.copy()), requests[1].seed, CPU)
    diff = max(float((x - y).abs().max()) for x, y in zip(first[1].state_dict().values(),
                                                           slow.state_dict().values()))
    assert diff < 1e-4


def test_sequential_bank_equals_train_from_scratch_exactly(task, data, tmp_path):
    bank = ShadowBank(task, data, TensorCache(tmp_path), CPU, vectorise="never")
    request = ModelRequest("gold", np.arange(200), seed=9)
    model = bank.models([request])[0]
    assert _equal(model, train_from_scratch(task, data, bank.pool.subset(np.arange(200)), 9, CPU))


def test_trainers_have_different_cache_entries(task, data, tmp_path):
    cache = TensorCache(tmp_path)
    request = ModelRequest("shadow", np.arange(100), seed=0)
    never = ShadowBank(task, data, cache, CPU, vectorise="never")
    always = ShadowBank(task, data, cache, CPU, vectorise="always")
    assert never.model_config(request)["trainer"] == "sequential" and always.trainer == "vmap"
    assert cache.path(never.model_config(request)) != cache.path(always.model_config(request))
    never.models([request])
    always.models([request])
    assert never.n_trained == 1 and always.n_trained == 1


def test_auto_trains_convolutional_models_sequentially_on_the_cpu(task, data, tmp_path):
    cnn_task = replace(task, model=ModelSpec("cnn", {"width": 4}))
    assert ShadowBank(cnn_task, data, TensorCache(tmp_path), CPU).trainer == "sequential"
    assert ShadowBank(cnn_task, data, TensorCache(tmp_path), CPU, vectorise="always").trainer == "vmap"


def test_corrupt_or_mismatching_entries_are_retrained(task, data, tmp_path):
    cache = TensorCache(tmp_path)
    bank = ShadowBank(task, data, cache, CPU)
    request = ModelRequest("shadow", np.arange(0, 300, 2), seed=4)
    good = bank.models([request])[0]
    config = bank.model_config(request)
    path = cache.path(config)
    raw = bytearray(path.read_bytes())
    raw[-8:] = bytes(8)  # damage tensor data at the end of the file
    path.write_bytes(bytes(raw))
    fresh = ShadowBank(task, data, cache, CPU)
    assert _equal(fresh.models([request])[0], good) and fresh.n_trained == 1
    # an entry whose stored metadata disagrees with the request (here the count) is not used
    cache.put(config, good.state_dict(), {**bank.metadata(request), "count": 1})
    fresh = ShadowBank(task, data, cache, CPU)
    fresh.models([request])
    assert fresh.n_trained == 1
    # nor is one that does not load strictly into the task's architecture
    cache.put(config, {"weight": torch.zeros(3)}, bank.metadata(request))
    fresh = ShadowBank(task, data, cache, CPU)
    assert _equal(fresh.models([request])[0], good) and fresh.n_trained == 1


def test_batchnorm_architecture_falls_back_to_sequential(task, data, tmp_path):
    bn_task = replace(task, model=ModelSpec("allcnn", {"width": 4}), recipe=Recipe(epochs=1))
    bank = ShadowBank(bn_task, data, TensorCache(tmp_path), CPU)
    assert bank.trainer == "sequential"
    request = ModelRequest("shadow", np.arange(64), seed=1)
    model = bank.models([request])[0]
    assert _equal(model, train_from_scratch(bn_task, data, bank.pool.subset(np.arange(64)), 1, CPU))
    with pytest.raises(ValueError, match="cannot be trained vectorised"):
        ShadowBank(bn_task, data, TensorCache(tmp_path), CPU, vectorise="always")


def test_logits_are_stacked_and_memoised(task, data, tmp_path):
    bank = ShadowBank(task, data, TensorCache(tmp_path), CPU)
    requests = _requests(bank, 2)
    points = np.concatenate([np.arange(10), bank.test_index(np.arange(5))])
    logits = bank.logits(requests, points)
    assert logits.shape == (2, 15, data.n_classes) and logits.dtype == torch.float32
    model = bank.models(requests[1:])[0]
    assert torch.allclose(logits[1], predict_logits(model, bank.pool.subset(points), CPU))
    assert bank.logits(requests, points)[0].data_ptr() == logits[0].data_ptr() or torch.equal(
        bank.logits(requests, points), logits)
    with pytest.raises(ValueError, match="pool indices"):
        bank.logits(requests, np.array([len(bank.pool)]))


def test_derived_models_are_cached_and_validated(task, data, tmp_path):
    cache = TensorCache(tmp_path)
    bank = ShadowBank(task, data, cache, CPU)
    base = ModelRequest("shadow-original", np.arange(300), seed=2)
    calls = []

    def derive(bank: ShadowBank, label: dict, make) -> torch.nn.Module:
        return bank.derived(lambda model, pool, device: make(model), [(base, label, ())])[0]

    def shrink(model: torch.nn.Module) -> torch.nn.Module:
        calls.append(1)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(0.5)
        return model

    derived = derive(bank, {"method": "shrink"}, shrink)
    original = bank.models([base])[0]
    assert all(torch.allclose(d, 0.5 * o) for d, o in zip(derived.parameters(), original.parameters()))
    again = derive(ShadowBank(task, data, cache, CPU), {"method": "shrink"}, shrink)
    assert calls == [1] and _equal(derived, again)
    [logits] = bank.derived_logits(lambda model, pool, device: shrink(model), [(base, {"method": "shrink"}, ())],
                                   np.arange(7))
    assert logits.shape == (7, data.n_classes) and calls == [1]

    def nan(model: torch.nn.Module) -> torch.nn.Module:
        with torch.no_grad():
            next(model.parameters()).fill_(math.nan)
        return model

    with pytest.raises(PluginValidationError, match="NaN") as err:
        derive(bank, {"method": "nan"}, nan)
    assert "\n" not in str(err.value)
    other = build_model("mlp", (1, 8, 8), 10, data.mean, data.std, {"hidden": 7})
    with pytest.raises(PluginValidationError, match="does not match the architecture") as err:
        derive(bank, {"method": "other"}, lambda model: other)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="JSON"):
        derive(bank, {"method": object()}, shrink)
    with pytest.raises(PluginValidationError, match="expected an nn.Module, got int"):
        derive(bank, {"method": "int"}, lambda model: 3)
