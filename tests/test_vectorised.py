"""Vectorised training against the sequential recipe loop: same seeds and subsets, same models."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import stats

from muaudit.data import load_dataset
from muaudit.task import NAMED_TASKS, ModelSpec, Recipe, Task
from muaudit.training import generator, predict_logits, train_from_scratch
from muaudit.vectorised import _epoch_order, can_vectorise, fit_vectorised, train_vectorised, worth_vectorising
from muaudit.zoo import build_model

CPU = torch.device("cpu")
SIZES = (1257, 700, 333, 70)  # unequal: 20, 11, 6 and 2 batches per epoch, each with a smaller last batch


@pytest.fixture(scope="module")
def data():
    return load_dataset("digits")


def _task(arch: str = "mlp", **recipe: object) -> Task:
    base = dict(epochs=3, batch_size=64, optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4,
                schedule="cosine")
    return replace(NAMED_TASKS["digits"], model=ModelSpec(arch, {"width": 8} if arch == "cnn" else {}),
                   recipe=Recipe(**{**base, **recipe}))


def _subsets(n: int, sizes: tuple[int, ...], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(n, size=s, replace=False)) for s in sizes]


def _accuracy(model: torch.nn.Module, data) -> float:
    return float((predict_logits(model, data.test, CPU).argmax(1) == data.test.y).float().mean())


def _max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k] - sb[k]).abs().max()) for k in sa)


@pytest.mark.parametrize("arch, optimizer, augment", [
    ("mlp", "sgd", "none"), ("cnn", "sgd", "none"), ("cnn", "sgd", "crop-flip"), ("mlp", "adam", "none"),
])
def test_vectorised_matches_sequential_for_the_same_seeds_and_subsets(data, arch, optimizer, augment):
    task = _task(arch, optimizer=optimizer, augment=augment, lr=0.05 if optimizer == "sgd" else 1e-3)
    subsets, seeds = _subsets(len(data.train), SIZES), [11, 12, 13, 14]
    vectorised = train_vectorised(task, data, data.train, subsets, seeds, CPU, chunk=3)  # two chunks
    for subset, seed, fast in zip(subsets, seeds, vectorised):
        slow = train_from_scratch(task, data, data.train.subset(subset), seed, CPU)
        assert _max_diff(fast, slow) < 1e-3, (arch, len(subset))
        assert abs(_accuracy(fast, data) - _accuracy(slow, data)) <= 1 / len(data.test) + 1e-9
        assert not fast.training


def test_each_model_draws_its_own_order_exactly_as_split_batches(data):
    subsets = _subsets(len(data.train), (100, 37))
    gens_fast, gens_slow = [generator(5), generator(6)], [generator(5), generator(6)]
    for _ in range(2):  # two epochs: the generators advance identically
        order = _epoch_order([torch.from_numpy(s) for s in subsets], gens_fast, 16)
        assert order.shape == (2, 7 * 16)
        for m, subset in enumerate(subsets):
            split = data.train.subset(subset)
            expected = torch.cat([y for _, y in split.batches(16, shuffle=True, generator=gens_slow[m])])
            real = order[m][order[m] >= 0]
            assert len(real) == len(subset) and (order[m][len(subset):] == -1).all()
            assert torch.equal(data.train.y[real], expected)
            assert set(real.tolist()) == set(subset.tolist())


def test_vectorised_and_sequential_accuracies_are_equally_distributed_across_seeds(data):
    task = _task("mlp", epochs=4)
    subsets = _subsets(len(data.train), (628,) * 8, seed=1)
    fast = train_vectorised(task, data, data.train, subsets, list(range(100, 108)), CPU)
    slow = [train_from_scratch(task, data, data.train.subset(s), seed, CPU)
            for s, seed in zip(subsets, range(200, 208))]  # other seeds: a statistical, not a paired, comparison
    acc_fast = np.array([_accuracy(m, data) for m in fast])
    acc_slow = np.array([_accuracy(m, data) for m in slow])
    assert abs(acc_fast.mean() - acc_slow.mean()) < 0.02
    assert stats.mannwhitneyu(acc_fast, acc_slow).pvalue > 0.05


def test_chunk_size_does_not_change_the_result(data):
    task = _task("mlp", epochs=2)
    subsets, seeds = _subsets(len(data.train), (300, 200, 90)), [1, 2, 3]
    one = train_vectorised(task, data, data.train, subsets, seeds, CPU, chunk=1)
    three = train_vectorised(task, data, data.train, subsets, seeds, CPU, chunk=3)
    for a, b in zip(one, three):
        assert _max_diff(a, b) < 1e-5


@pytest.mark.parametrize("arch", ["allcnn", "smallvgg", "resnet18"])
def test_batchnorm_and_dropout_architectures_are_not_vectorisable(arch):
    model = build_model(arch, (1, 8, 8), 10, [0.5], [0.25], {"width": 4})
    assert not can_vectorise(model)
    assert not can_vectorise(model, torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="cannot be vectorised"):
        fit_vectorised([model], load_dataset("digits").train, [np.arange(10)], Recipe(epochs=1), [0], CPU)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_zoo_mlp_and_cnn_are_vectorisable(arch):
    model = build_model(arch, (1, 8, 8), 10, [0.5], [0.25], {"width": 4} if arch == "cnn" else {})
    assert can_vectorise(model) and can_vectorise(model, torch.rand(2, 1, 8, 8))


def test_invalid_subsets_are_rejected(data):
    task = _task("mlp", epochs=1)
    with pytest.raises(ValueError, match="non-empty"):
        train_vectorised(task, data, data.train, [np.array([], dtype=np.int64)], [0], CPU)
    with pytest.raises(ValueError, match="must lie in"):
        train_vectorised(task, data, data.train, [np.array([0, len(data.train)])], [0], CPU)
    with pytest.raises(ValueError, match="subsets for"):
        train_vectorised(task, data, data.train, [np.arange(5)], [0, 1], CPU)


def test_convolutions_are_vectorised_by_default_only_off_the_cpu():
    mlp = build_model("mlp", (1, 8, 8), 10, [0.5], [0.25])
    cnn = build_model("cnn", (1, 8, 8), 10, [0.5], [0.25], {"width": 4})
    bn = build_model("allcnn", (1, 8, 8), 10, [0.5], [0.25], {"width": 4})
    assert worth_vectorising(mlp, CPU) and not worth_vectorising(cnn, CPU)
    assert worth_vectorising(cnn, torch.device("cuda")) and not worth_vectorising(bn, torch.device("cuda"))
