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
  lists, strings, bytes, numbers and NumPy numeric arrays (rebuilt by muaudit itself from checked shape, dtype
  and raw bytes, not by NumPy's unpickling code), so a malicious or corrupt file cannot execute code or crash.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from muaudit.defaults import DATASETS, ROOTLESS_DATASETS
from muaudit.errors import DataError

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
VALIDATION_SEED = 20240101
SUBSET_SEED = 20261203
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


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

    def clone(self) -> "Split":
        """A private copy (new storage for every tensor)."""
        return Split(self.x.clone(), self.y.clone(), None if self.fine is None else self.fine.clone())

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

    def clone(self) -> "DataBundle":
        """A private copy: no tensor shared with this bundle."""
        return DataBundle(self.name, self.train.clone(), self.val.clone(), self.test.clone(), self.n_classes,
                          self.mean, self.std)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.train.x.shape[1:])

    def fingerprint(self) -> str:
        """SHA-256 of the training, validation and test data (inputs, labels and any fine labels), so a task
        can detect that its data changed."""
        digest = hashlib.sha256()
        for split in (self.train, self.val, self.test):
            digest.update(split.x.numpy().tobytes())
            digest.update(split.y.numpy().tobytes())
            if split.fine is not None:  # sub-class forget sets are drawn from the fine labels
                digest.update(split.fine.numpy().tobytes())
        return digest.hexdigest()


def load_dataset(name: str, root: str | None = None, val_fraction: float = 0.2,
                 train_subset: int | None = None) -> DataBundle:
    """Load data set ``name`` (one of :data:`DATASETS`) from ``root`` and carve the validation split.

    ``train_subset`` keeps a class-stratified random subset of that many training examples (fixed seed
    :data:`SUBSET_SEED`, independent of any task seed, so the subset is a property of the data set).
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if name in ROOTLESS_DATASETS and root is not None:
        raise DataError(f"a dataset root ({root}) does not apply to {name!r}: it is bundled with scikit-learn")
    if name == "fashion-mnist" and root is None:  # resolved here so that the cache sees the real location
        root = os.environ.get("MUAUDIT_FASHION_MNIST_ROOT", FASHION_MNIST_ROOT)
    root = None if root is None else str(root)
    # A private copy of the in-process memo: whatever one audit (or a plugin) does to its tensors cannot reach
    # the next audit in this process.
    return _load_cached(name, root, float(val_fraction), _file_stamp(root), train_subset).clone()


def _file_stamp(root: str | None) -> tuple[int, int] | None:
    """Modification time and size of a single-file data set, so a file rewritten in place is reloaded."""
    try:
        stat = os.stat(root) if root is not None and os.path.isfile(root) else None
    except OSError:
        return None
    return None if stat is None else (stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)
def _load_cached(name: str, root: str | None, val_fraction: float, stamp: tuple[int, int] | None,
                 train_subset: int | None = None) -> DataBundle:
    key = {"schema": DECODED_SCHEMA, "name": name, "root": root, "val_fraction": val_fraction,
           "train_subset": train_subset, "source": _source_stamp(name, root)}
    cached = _read_decoded(key)
    if cached is not None:
        return cached
    train, test, n_classes = _RAW_LOADERS[name](root)
    if train_subset is not None:
        train = _training_subset(train, train_subset, name)
    val, test = _carve_validation(test, val_fraction)
    mean, std = _channel_stats(train.x)
    bundle = DataBundle(name, train, val, test, n_classes, mean, std)
    _write_decoded(key, bundle)
    return bundle


# ------------------------------------------------------------------------------------ decoded-data cache
#: Decoded data sets are cached as ``.npz`` (arrays only, read without pickle) under the model cache's
#: ``datasets/`` folder, keyed by the loading arguments and the size and modification time of every source file,
#: so that no audit pays the decoding (Fashion-MNIST: gunzip, IDX parsing, validation split, channel statistics:
#: about 3 s, plus 2 s to import scikit-learn) twice. Images in [0, 1] are stored as bytes when that is lossless.
DECODED_SCHEMA = 1


def _source_stamp(name: str, root: str | None) -> list[Any]:
    """(path, size, mtime) of every file a data set is read from (scikit-learn's version for digits)."""
    if name == "digits":
        from importlib.metadata import version

        return ["scikit-learn", version("scikit-learn")]
    if root is None:
        return []
    base = Path(root)
    files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())[:200]
    return [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def _decoded_path(key: dict[str, Any]) -> Path:
    import json

    from muaudit.defaults import default_cache_dir

    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return default_cache_dir() / "datasets" / f"{digest}.npz"


def _write_decoded(key: dict[str, Any], bundle: DataBundle) -> None:
    """Best effort: an unwritable cache only costs time."""
    import json
    import tempfile

    from muaudit.files import publish

    arrays: dict[str, np.ndarray] = {"key": np.array(json.dumps(key, sort_keys=True, default=str)),
                                     "n_classes": np.array(bundle.n_classes), "mean": np.array(bundle.mean),
                                     "std": np.array(bundle.std)}
    for part in ("train", "val", "test"):
        split = getattr(bundle, part)
        arrays[f"{part}_x"] = _compact(split.x.numpy())
        arrays[f"{part}_y"] = split.y.numpy()
        if split.fine is not None:
            arrays[f"{part}_fine"] = split.fine.numpy()
    path = _decoded_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        publish(tmp, path)
    except OSError:
        pass


def _compact(x: np.ndarray) -> np.ndarray:
    """Bytes when ``x`` holds exactly k/255 values (images), else ``x`` itself."""
    as_bytes = np.rint(x * 255.0)
    if as_bytes.min(initial=0) >= 0 and as_bytes.max(initial=0) <= 255 and \
            np.array_equal((as_bytes / 255.0).astype(np.float32), x):
        return as_bytes.astype(np.uint8)
    return x


def _read_decoded(key: dict[str, Any]) -> DataBundle | None:
    import json

    path = _decoded_path(key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["key"]) != json.dumps(key, sort_keys=True, default=str):
                return None
            parts = {p: _split(_expand(stored[f"{p}_x"]), stored[f"{p}_y"],
                               stored[f"{p}_fine"] if f"{p}_fine" in stored else None)
                     for p in ("train", "val", "test")}
            mean, std = tuple(float(v) for v in stored["mean"]), tuple(float(v) for v in stored["std"])
            return DataBundle(key["name"], parts["train"], parts["val"], parts["test"], int(stored["n_classes"]),
                              mean, std)
    except (OSError, ValueError, KeyError, zlib.error):
        return None


def _expand(x: np.ndarray) -> np.ndarray:
    return (x.astype(np.float32) / 255.0).astype(np.float32) if x.dtype == np.uint8 else x


def _training_subset(train: Split, size: int, name: str) -> Split:
    """A class-stratified subset of ``size`` training examples, in their original order."""
    from sklearn.model_selection import train_test_split

    if not 2 <= size <= len(train):
        raise DataError(f"train_subset {size} is not between 2 and the {len(train)} training examples of {name}")
    if size == len(train):
        return train
    labels = train.y.numpy()
    stratify = labels if np.bincount(labels).min() >= 2 and size >= len(np.unique(labels)) else None
    keep, _ = train_test_split(np.arange(len(train)), train_size=size, stratify=stratify, random_state=SUBSET_SEED)
    return train.subset(np.sort(keep))


def _carve_validation(test: Split, fraction: float) -> tuple[Split, Split]:
    if fraction == 0.0:
        return test.subset([]), test
    labels = test.y.numpy()
    counts = np.bincount(labels)[np.bincount(labels) > 0]  # classes absent from the test split do not count
    # stratified when every class can be split; otherwise (too few examples per class) a plain random split
    attempts = [labels, None] if counts.size and counts.min() >= 2 else [None]
    for stratify in attempts:
        try:
            val_idx, test_idx = _split_indices(len(test), fraction, stratify)
        except ValueError:
            continue
        return test.subset(np.sort(val_idx)), test.subset(np.sort(test_idx))
    raise DataError(f"val_fraction {fraction} cannot split a test set of {len(test)} examples "
                    "into non-empty validation and test parts")


def _split_indices(n: int, fraction: float, stratify: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    val_idx, test_idx = train_test_split(np.arange(n), train_size=fraction, stratify=stratify,
                                         random_state=VALIDATION_SEED)
    return val_idx, test_idx


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
    except (OSError, EOFError, zlib.error) as exc:
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
        images = _read_idx_ndim(_find(base, f"{prefix}-images-idx3-ubyte"), 3)
        labels = _read_idx_ndim(_find(base, f"{prefix}-labels-idx1-ubyte"), 1)
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"{base}: {prefix} images and labels differ in count")
        parts[prefix] = _split(images[:, None].astype(np.float32) / 255.0, labels.astype(np.int64))
    return parts["train"], parts["t10k"], 10


def _read_idx_ndim(path: Path, ndim: int) -> np.ndarray:
    array = read_idx(path)
    if array.ndim != ndim:
        raise DataError(f"{path}: expected a {ndim}-dimensional IDX array, found shape {array.shape}")
    return array


def _find(base: Path, stem: str) -> Path:
    for candidate in (base / f"{stem}.gz", base / stem):
        if candidate.exists():
            return candidate
    raise DataError(f"data file not found: {base / (stem + '.gz')}")


# ------------------------------------------------------------------------------------------------ CIFAR
_PLAIN_DTYPES = frozenset({"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"})
_NDARRAY = object()  # what ``numpy.ndarray`` resolves to inside a CIFAR pickle


def _text(value: object) -> object:
    return value.decode("latin-1") if isinstance(value, bytes) else value


class _PickledDtype:
    """Stand-in for ``numpy.dtype`` while unpickling: plain numeric types only, never NumPy's own setstate."""

    def __init__(self, spec: object, align: object = False, copy: object = False) -> None:
        spec = _text(spec)
        if not isinstance(spec, str) or spec.lstrip("<>|=") not in _PLAIN_DTYPES:
            raise pickle.UnpicklingError(f"refusing to load NumPy dtype {spec!r}")
        self.dtype = np.dtype(spec)

    def __setstate__(self, state: object) -> None:
        order = _text(state[1]) if isinstance(state, tuple) and len(state) > 1 else None
        if order not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError("malformed NumPy dtype in pickle")
        if order in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(order)


class _PickledArray:
    """Stand-in for ``numpy.ndarray`` while unpickling; its checked state becomes a real array afterwards."""

    array: np.ndarray | None = None

    def __setstate__(self, state: object) -> None:
        if isinstance(state, tuple) and len(state) == 5:  # (version, shape, dtype, fortran, data)
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4:
            raise pickle.UnpicklingError("malformed NumPy array in pickle")
        shape, dtype, fortran, data = state
        self.array = _checked_array(data, dtype, shape, "F" if fortran else "C")


def _checked_array(data: object, dtype: object, shape: object, order: object) -> np.ndarray:
    """``np.frombuffer`` of ``data`` after checking dtype, shape and length (what NumPy's setstate skips)."""
    if not isinstance(dtype, _PickledDtype):
        raise pickle.UnpicklingError("NumPy array in pickle without a plain dtype")
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise pickle.UnpicklingError(f"NumPy array in pickle with a malformed shape {shape!r}")
    if isinstance(data, str):
        data = data.encode("latin-1")
    if not isinstance(data, (bytes, bytearray, pickle.PickleBuffer)):
        raise pickle.UnpicklingError("NumPy array in pickle without raw data")
    raw = memoryview(data).cast("B")
    if len(raw) != int(np.prod(shape, dtype=np.int64)) * dtype.dtype.itemsize or _text(order) not in ("C", "F"):
        raise pickle.UnpicklingError(f"NumPy array in pickle: {len(raw)} bytes do not fill shape {shape}")
    return np.frombuffer(raw, dtype=dtype.dtype).reshape(shape, order=_text(order))


def _reconstruct(cls: object, shape: object, typecode: object) -> _PickledArray:
    if cls is not _NDARRAY:
        raise pickle.UnpicklingError("refusing to reconstruct anything but a NumPy array")
    return _PickledArray()


def _frombuffer(data: object, dtype: object, shape: object, order: object) -> np.ndarray:
    return _checked_array(data, dtype, shape, order)


def _scalar(dtype: object, data: object = b"") -> object:
    return _checked_array(data, dtype, (), "C")[()]


def _encode(text: object, encoding: object = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("refusing to call _codecs.encode with these arguments")
    return text.encode("latin-1")


class _Global:
    """A callable handed to the unpickler; read-only, so a pickle's BUILD opcode cannot alter it."""

    __slots__ = ("_function",)

    def __init__(self, function: Callable[..., object]) -> None:
        object.__setattr__(self, "_function", function)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("read-only")

    def __call__(self, *args: object) -> object:
        return self._function(*args)


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR's python layout: plain containers, strings, numbers and NumPy numeric arrays.

    Every global resolves to a muaudit stand-in, never to NumPy's own reconstruction code (whose
    ``__setstate__`` trusts its input and can crash on a malformed pickle).
    """

    _ALLOWED: dict[tuple[str, str], object] = {
        **{(m, "_reconstruct"): _Global(_reconstruct) for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
        **{(m, "scalar"): _Global(_scalar) for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
        **{(m, "_frombuffer"): _Global(_frombuffer) for m in ("numpy.core.numeric", "numpy._core.numeric")},
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _Global(_PickledDtype),
        ("_codecs", "encode"): _Global(_encode),  # bytes pickled by Python 3 with protocols 0-2
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _arrays_in(value: object) -> object:
    """``value`` with every unpickled array stand-in replaced by its array."""
    if isinstance(value, _PickledArray):
        if value.array is None:
            raise pickle.UnpicklingError("NumPy array in pickle without its data")
        return value.array
    if isinstance(value, dict):
        return {k: _arrays_in(v) for k, v in value.items()}
    if isinstance(value, list) and any(isinstance(v, (_PickledArray, dict, list, tuple)) for v in value):
        return [_arrays_in(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_arrays_in(v) for v in value)
    if isinstance(value, _PickledDtype):
        return value.dtype
    return value


def _read_cifar_pickle(path: Path) -> dict[str, object]:
    if not path.exists():
        raise DataError(f"CIFAR file not found: {path}")
    try:
        with open(path, "rb") as handle:
            raw = _arrays_in(_SafeUnpickler(io.BytesIO(handle.read()), encoding="bytes").load())
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
            KeyError, MemoryError, OSError, RecursionError) as exc:  # what a corrupt pickle stream can raise
        raise DataError(f"cannot read CIFAR file {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path} does not hold a CIFAR batch dictionary")
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in raw.items()}


def _cifar_images(batch: dict[str, object], path: Path) -> np.ndarray:
    data = np.asarray(batch.get("data"))
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' must be an (N, 3072) array")
    return data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0


def _cifar_labels(batch: dict[str, object], key: str, count: int, n_classes: int, path: Path) -> np.ndarray:
    """The labels under ``key``: one integer in ``[0, n_classes)`` per image."""
    if key not in batch:
        raise DataError(f"{path}: the batch has no {key!r} entry")
    try:
        labels = np.asarray(batch[key], dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: {key!r} must be a list of integer labels") from None
    if labels.shape != (count,):
        raise DataError(f"{path}: {key!r} holds {labels.size} labels for {count} images")
    if count and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"{path}: {key!r} must lie in [0, {n_classes - 1}]")
    return labels


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
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = _read_cifar_pickle(base / name)
        xs.append(_cifar_images(batch, base / name))
        ys.append(_cifar_labels(batch, "labels", len(xs[-1]), 10, base / name))
    train_split = _split(np.concatenate(xs[:-1]), np.concatenate(ys[:-1]))
    return train_split, _split(xs[-1], ys[-1]), 10


def _load_cifar100_family(root: str | None, coarse: bool) -> tuple[Split, Split, int]:
    base = _cifar_dir(root, "cifar-100-python")
    splits = []
    for part in ("train", "test"):
        batch = _read_cifar_pickle(base / part)
        images = _cifar_images(batch, base / part)
        fine = _cifar_labels(batch, "fine_labels", len(images), 100, base / part)
        labels = _cifar_labels(batch, "coarse_labels", len(images), 20, base / part) if coarse else fine
        splits.append(_split(images, labels, fine))
    return splits[0], splits[1], 20 if coarse else 100


# -------------------------------------------------------------------------------------------------- npz
#: Most classes an ``.npz`` data set may have (its labels must lie in ``[0, MAX_NPZ_CLASSES)``): a stray huge
#: label would otherwise size the output layer.
MAX_NPZ_CLASSES = 10_000


def _load_npz(root: str | None) -> tuple[Split, Split, int]:
    """User arrays: ``x_train, y_train, x_test, y_test`` in one ``.npz`` (uint8 inputs are scaled by 1/255).

    Inputs are real numbers (integer, boolean or float arrays) of shape ``(N, D)`` vectors, ``(N, H, W)`` grey
    images or ``(N, C, H, W)`` images; labels are integers in ``[0, MAX_NPZ_CLASSES)``. Arrays are read without
    pickle; anything else is a :class:`DataError`.
    """
    if root is None or not Path(root).is_file():
        raise DataError(f"npz dataset file not found: {root}")
    parts = _read_npz_arrays(root)
    splits = [_npz_split(parts[f"x_{p}"], parts[f"y_{p}"], root, p) for p in ("train", "test")]
    if splits[0].x.shape[1:] != splits[1].x.shape[1:]:
        raise DataError(f"{root}: x_train and x_test differ in example shape "
                        f"({tuple(splits[0].x.shape[1:])} vs {tuple(splits[1].x.shape[1:])})")
    n_classes = int(max(splits[0].y.max(), splits[1].y.max())) + 1
    return splits[0], splits[1], n_classes


def _read_npz_arrays(root: str) -> dict[str, np.ndarray]:
    """The four arrays of an ``.npz`` file; a corrupt archive or a pickled array is a :class:`DataError`."""
    import zipfile

    unreadable = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, KeyError,
                  MemoryError)
    try:
        loaded = np.load(root, allow_pickle=False)
    except unreadable as exc:
        raise DataError(f"cannot read {root}: {_first_line(exc)}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(f"{root} holds a single array, not an .npz archive of x_train, y_train, x_test, y_test")
    with loaded as arrays:
        missing = [k for k in NPZ_KEYS if k not in arrays.files]
        if missing:
            raise DataError(f"{root} lacks the array {missing[0]!r} (need {', '.join(NPZ_KEYS)})")
        try:
            return {k: arrays[k] for k in NPZ_KEYS}
        except unreadable as exc:
            raise DataError(f"cannot read {root}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _npz_split(x: np.ndarray, y: np.ndarray, path: str, part: str = "train") -> Split:
    if x.dtype.kind not in "biuf":
        raise DataError(f"{path}: x_{part} must hold real numbers, found dtype {x.dtype}")
    if y.dtype.kind not in "iu":
        raise DataError(f"{path}: y_{part} must hold integers (class labels), found dtype {y.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim not in (2, 4) or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{path}: expected x of shape (N, D), (N, H, W) or (N, C, H, W) and y of shape (N,)")
    if len(y) == 0 or 0 in x.shape[1:]:
        raise DataError(f"{path}: a split is empty")
    if (y < 0).any() or (y >= MAX_NPZ_CLASSES).any():
        raise DataError(f"{path}: labels must be non-negative integers below {MAX_NPZ_CLASSES}, "
                        f"found {int(y.min()) if (y < 0).any() else int(y.max())}")
    with np.errstate(over="ignore", invalid="ignore"):  # values beyond float32 become inf, rejected below
        scaled = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    if not np.isfinite(scaled).all():
        raise DataError(f"{path}: inputs contain NaN or infinite values (or values beyond float32)")
    return _split(scaled, y.astype(np.int64))


_RAW_LOADERS = {
    "digits": _load_digits,
    "fashion-mnist": _load_fashion_mnist,
    "cifar10": _load_cifar10,
    "cifar100": lambda root: _load_cifar100_family(root, coarse=False),
    "cifar20": lambda root: _load_cifar100_family(root, coarse=True),
    "npz": _load_npz,
}
