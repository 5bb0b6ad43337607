"""Datasets as in-memory tensors: loaders, the validation split, and batch iteration.

Every dataset is returned as a :class:`DataBundle` of float32 inputs in ``[0, 1]`` (images as ``(N, C, H, W)``,
plain feature vectors as ``(N, D)``) and int64 labels. Normalisation is not applied here: each model in the zoo
starts with a normalisation layer built from the training split's per-channel mean and standard deviation, so
that attacks that perturb inputs (FGSM, PGD) work in ``[0, 1]`` space.

Decisions:
- The validation split is carved from the test split, stratified by class, with a fixed seed that does not
  depend on the task seed, so that it is a property of the data set (PGU uses a stratified half of the test set).
  The remaining test examples form the test split; validation and test are disjoint.
- CIFAR files are python pickles; they are read with a restricted unpickler that accepts only dictionaries,
  lists, strings, bytes, numbers and NumPy arrays, so a malicious file cannot execute code.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from muaudit.errors import DataError

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
VALIDATION_SEED = 20240101
DATASETS = ("digits", "fashion-mnist", "cifar10", "cifar100", "cifar20", "npz")


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` (float32), labels ``y`` (int64) and, for CIFAR-20/100, the fine labels ``fine``."""

    x: torch.Tensor
    y: torch.Tensor
    fine: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, indices: np.ndarray | torch.Tensor | list[int]) -> "Split":
        """The examples at ``indices`` (in that order)."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        fine = None if self.fine is None else self.fine[idx]
        return Split(self.x[idx], self.y[idx], fine)

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` mini-batches; shuffling draws from ``generator`` for reproducibility."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield self.x[idx], self.y[idx]


@dataclass(frozen=True)
class DataBundle:
    """A loaded data set: train, validation and test splits plus what models need to know about it."""

    name: str
    train: Split
    val: Split
    test: Split
    n_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.train.x.shape[1:])

    def fingerprint(self) -> str:
        """SHA-256 of the training and test data, so a task can detect that its data changed."""
        digest = hashlib.sha256()
        for split in (self.train, self.val, self.test):
            digest.update(split.x.numpy().tobytes())
            digest.update(split.y.numpy().tobytes())
        return digest.hexdigest()


def load_dataset(name: str, root: str | None = None, val_fraction: float = 0.2) -> DataBundle:
    """Load data set ``name`` (one of :data:`DATASETS`) from ``root`` and carve the validation split."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    return _load_cached(name, None if root is None else str(root), float(val_fraction))


@lru_cache(maxsize=4)
def _load_cached(name: str, root: str | None, val_fraction: float) -> DataBundle:
    train, test, n_classes = _RAW_LOADERS[name](root)
    val, test = _carve_validation(test, val_fraction)
    mean, std = _channel_stats(train.x)
    return DataBundle(name, train, val, test, n_classes, mean, std)


def _carve_validation(test: Split, fraction: float) -> tuple[Split, Split]:
    if fraction == 0.0:
        return test.subset([]), test
    from sklearn.model_selection import train_test_split

    labels = test.y.numpy()
    stratify = labels if np.bincount(labels).min() >= 2 else None
    val_idx, test_idx = train_test_split(
        np.arange(len(test)), train_size=fraction, stratify=stratify, random_state=VALIDATION_SEED
    )
    return test.subset(np.sort(val_idx)), test.subset(np.sort(test_idx))


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    dims = [0, 2, 3] if x.dim() == 4 else [0]
    mean = x.double().mean(dim=dims)
    std = x.double().std(dim=dims).clamp_min(1e-6)
    if x.dim() != 4:  # feature vectors: one global statistic keeps the layer shape-agnostic
        mean, std = mean.mean().reshape(1), std.mean().reshape(1)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


# --------------------------------------------------------------------------------------------- digits
def _load_digits(root: str | None) -> tuple[Split, Split, int]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y, random_state=0)
    tr, te = np.sort(tr), np.sort(te)
    return _split(x[tr], y[tr]), _split(x[te], y[te]), 10


def _split(x: np.ndarray, y: np.ndarray, fine: np.ndarray | None = None) -> Split:
    return Split(
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)),
        None if fine is None else torch.from_numpy(np.ascontiguousarray(fine, dtype=np.int64)),
    )


# --------------------------------------------------------------------------------------- fashion-mnist
def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): the format of MNIST and Fashion-MNIST."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(dims)):
        raise DataError(f"{path}: IDX header promises {dims} but the file has {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _load_fashion_mnist(root: str | None) -> tuple[Split, Split, int]:
    base = Path(root or os.environ.get("MUAUDIT_FASHION_MNIST_ROOT", FASHION_MNIST_ROOT))
    if not base.is_dir():
        raise DataError(
            f"Fashion-MNIST directory not found: {base} (on Debian: apt-get install dataset-fashion-mnist)"
        )
    parts = {}
    for prefix in ("train", "t10k"):
        images = read_idx(_find(base, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find(base, f"{prefix}-labels-idx1-ubyte"))
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"{base}: {prefix} images and labels differ in count")
        parts[prefix] = _split(images[:, None].astype(np.float32) / 255.0, labels.astype(np.int64))
    return parts["train"], parts["t10k"], 10


def _find(base: Path, stem: str) -> Path:
    for candidate in (base / f"{stem}.gz", base / stem):
        if candidate.exists():
            return candidate
    raise DataError(f"data file not found: {base / (stem + '.gz')}")


# ------------------------------------------------------------------------------------------------ CIFAR
class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds NumPy arrays and plain containers (CIFAR's python layout)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("copyreg", "_reconstructor"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_cifar_pickle(path: Path) -> dict[str, object]:
    if not path.exists():
        raise DataError(f"CIFAR file not found: {path}")
    try:
        with open(path, "rb") as handle:
            raw = _SafeUnpickler(io.BytesIO(handle.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DataError(f"cannot read CIFAR file {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path} does not hold a CIFAR batch dictionary")
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in raw.items()}


def _cifar_images(batch: dict[str, object], path: Path) -> np.ndarray:
    data = np.asarray(batch.get("data"))
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' must be an (N, 3072) array")
    return data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0


def _cifar_dir(root: str | None, folder: str) -> Path:
    if root is None:
        raise DataError(f"CIFAR data needs a root directory (the folder holding {folder}/); pass --data-root")
    base = Path(root)
    base = base if base.name == folder else base / folder
    if not base.is_dir():
        raise DataError(f"CIFAR directory not found: {base}")
    return base


def _load_cifar10(root: str | None) -> tuple[Split, Split, int]:
    base = _cifar_dir(root, "cifar-10-batches-py")
    xs, ys = [], []
    for i in range(1, 6):
        batch = _read_cifar_pickle(base / f"data_batch_{i}")
        xs.append(_cifar_images(batch, base / f"data_batch_{i}"))
        ys.append(np.asarray(batch["labels"], dtype=np.int64))
    test = _read_cifar_pickle(base / "test_batch")
    train_split = _split(np.concatenate(xs), np.concatenate(ys))
    test_split = _split(_cifar_images(test, base / "test_batch"), np.asarray(test["labels"], dtype=np.int64))
    return train_split, test_split, 10


def _load_cifar100_family(root: str | None, coarse: bool) -> tuple[Split, Split, int]:
    base = _cifar_dir(root, "cifar-100-python")
    splits = []
    for part in ("train", "test"):
        batch = _read_cifar_pickle(base / part)
        fine = np.asarray(batch["fine_labels"], dtype=np.int64)
        labels = np.asarray(batch["coarse_labels"], dtype=np.int64) if coarse else fine
        splits.append(_split(_cifar_images(batch, base / part), labels, fine))
    return splits[0], splits[1], 20 if coarse else 100


# -------------------------------------------------------------------------------------------------- npz
def _load_npz(root: str | None) -> tuple[Split, Split, int]:
    """User arrays: ``x_train, y_train, x_test, y_test`` in one ``.npz`` (uint8 inputs are scaled by 1/255).

    Inputs are ``(N, D)`` vectors, ``(N, H, W)`` grey images or ``(N, C, H, W)`` images.
    """
    if root is None or not Path(root).is_file():
        raise DataError(f"npz dataset file not found: {root}")
    try:
        with np.load(root, allow_pickle=False) as arrays:
            parts = {k: arrays[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except KeyError as exc:
        raise DataError(f"{root} lacks the array {exc.args[0]!r} (need x_train, y_train, x_test, y_test)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {root}: {exc}") from None
    splits = [_npz_split(parts[f"x_{p}"], parts[f"y_{p}"], root) for p in ("train", "test")]
    n_classes = int(max(splits[0].y.max(), splits[1].y.max())) + 1
    return splits[0], splits[1], n_classes


def _npz_split(x: np.ndarray, y: np.ndarray, path: str) -> Split:
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim not in (2, 4) or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{path}: expected x of shape (N, D), (N, H, W) or (N, C, H, W) and y of shape (N,)")
    if not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
        raise DataError(f"{path}: labels must be non-negative integers")
    scaled = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    if not np.isfinite(scaled).all():
        raise DataError(f"{path}: inputs contain NaN or infinite values")
    return _split(scaled, y.astype(np.int64))


_RAW_LOADERS = {
    "digits": _load_digits,
    "fashion-mnist": _load_fashion_mnist,
    "cifar10": _load_cifar10,
    "cifar100": lambda root: _load_cifar100_family(root, coarse=False),
    "cifar20": lambda root: _load_cifar100_family(root, coarse=True),
    "npz": _load_npz,
}
