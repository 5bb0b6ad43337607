"""Dataset loaders (digits, Fashion-MNIST IDX, CIFAR pickles, npz arrays), the validation split and fingerprints."""
from __future__ import annotations

import gzip
import io
import os
import pickle
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from muaudit.data import (
    FASHION_MNIST_ROOT,
    VALIDATION_SEED,
    DataBundle,
    Split,
    _carve_validation,
    _RAW_LOADERS,
    load_dataset,
    read_idx,
)
from muaudit.errors import DataError

REAL_FASHION = Path(FASHION_MNIST_ROOT)


# --------------------------------------------------------------------------------------------- helpers
def _cifar_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def _dump(path: Path, obj: object, protocol: int = pickle.DEFAULT_PROTOCOL) -> None:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=protocol)


def write_cifar10(root: Path, per_batch: int = 6, n_test: int = 50, protocol: int = pickle.DEFAULT_PROTOCOL,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Tiny CIFAR-10 in the standard python layout: ``root/cifar-10-batches-py/{data_batch_1..5,test_batch}``."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    xs, ys = [], []
    for i in range(1, 6):
        data = _cifar_rows(rng, per_batch)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        _dump(base / f"data_batch_{i}", {b"batch_label": b"training batch", b"data": data, b"labels": labels},
              protocol)
        xs.append(data)
        ys += labels
    test = _cifar_rows(rng, n_test)
    test_labels = [i % 10 for i in range(n_test)]
    _dump(base / "test_batch", {b"batch_label": b"testing batch", b"data": test, b"labels": test_labels}, protocol)
    (base / "batches.meta").write_bytes(b"")  # present in the real layout; never read
    return {"x_train": np.concatenate(xs), "y_train": np.asarray(ys), "x_test": test,
            "y_test": np.asarray(test_labels)}


def write_cifar100(root: Path, n_train: int = 40, n_test: int = 30, seed: int = 0) -> dict[str, np.ndarray]:
    """Tiny CIFAR-100: ``root/cifar-100-python/{train,test}`` with fine and coarse labels (coarse = fine // 5)."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    out: dict[str, np.ndarray] = {}
    for part, n in (("train", n_train), ("test", n_test)):
        data = _cifar_rows(rng, n)
        fine = rng.integers(0, 100, n)
        _dump(base / part, {b"data": data, b"fine_labels": [int(v) for v in fine],
                            b"coarse_labels": [int(v) // 5 for v in fine], b"filenames": [b"x.png"] * n})
        out[f"x_{part}"], out[f"fine_{part}"] = data, fine
    return out


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file: magic ``00 00 08 <ndim>`` then big-endian dimensions, then the data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_fashion(root: Path, n_train: int = 30, n_test: int = 20, gz: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, np.ndarray] = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, array in (("images-idx3-ubyte", images), ("labels-idx1-ubyte", labels)):
            raw = idx_bytes(array)
            name = f"{prefix}-{kind}"
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (root / name).write_bytes(raw)
        out[f"images_{prefix}"], out[f"labels_{prefix}"] = images, labels
    return out


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def ids_npz(path: Path, n_train: int = 40, n_test: int = 200, n_classes: int = 5) -> Path:
    """An npz whose first feature is a unique example id, so splits can be traced back to the test set."""
    x_train = np.random.default_rng(0).random((n_train, 3)).astype(np.float32)
    x_test = np.zeros((n_test, 3), dtype=np.float32)
    x_test[:, 0] = np.arange(n_test)
    y_test = (np.arange(n_test) * 7) % n_classes
    return write_npz(path, x_train=x_train, y_train=np.arange(n_train) % n_classes, x_test=x_test, y_test=y_test)


class Evil:
    """Pickles as a call to ``os.system``: a loader that executes it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ------------------------------------------------------------------------------------------------ CIFAR
def test_cifar10_loads_standard_layout(tmp_path):
    raw = write_cifar10(tmp_path)
    data = load_dataset("cifar10", str(tmp_path))
    assert data.name == "cifar10" and data.n_classes == 10
    assert data.input_shape == (3, 32, 32)
    assert data.train.x.shape == (30, 3, 32, 32) and data.train.x.dtype == torch.float32
    assert data.train.y.dtype == torch.int64 and data.train.fine is None
    assert len(data.val) + len(data.test) == 50 and len(data.val) == 10
    assert float(data.train.x.min()) >= 0.0 and float(data.train.x.max()) <= 1.0
    np.testing.assert_array_equal(data.train.y.numpy(), raw["y_train"])
    expected = raw["x_train"].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    np.testing.assert_array_equal(data.train.x.numpy(), expected)
    assert len(data.mean) == 3 and len(data.std) == 3


def test_cifar_pixel_order_is_channel_then_row_then_column(tmp_path):
    raw = write_cifar10(tmp_path)
    x = load_dataset("cifar10", str(tmp_path)).train.x
    row = raw["x_train"][0]
    # the first 1024 bytes are the red plane in row-major order, then green, then blue
    for c, h, w in [(0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 0), (2, 31, 31), (1, 5, 17)]:
        assert round(float(x[0, c, h, w]) * 255) == int(row[c * 1024 + h * 32 + w])


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_pickles_of_any_protocol_load(tmp_path, protocol):
    raw = write_cifar10(tmp_path, protocol=protocol)
    data = load_dataset("cifar10", str(tmp_path))
    np.testing.assert_array_equal(data.train.y.numpy(), raw["y_train"])


def test_cifar_numpy_scalar_labels_load(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    write_cifar10(tmp_path)
    labels = list(np.arange(6, dtype=np.int64) % 10)  # numpy scalars, as list(np.array(...)) gives
    _dump(base / "data_batch_1", {b"data": _cifar_rows(np.random.default_rng(3), 6), b"labels": labels})
    data = load_dataset("cifar10", str(tmp_path))
    np.testing.assert_array_equal(data.train.y.numpy()[:6], np.arange(6))


def test_cifar_root_may_be_the_batches_directory_itself(tmp_path):
    write_cifar10(tmp_path)
    by_parent = load_dataset("cifar10", str(tmp_path))
    by_folder = load_dataset("cifar10", str(tmp_path / "cifar-10-batches-py"))
    assert by_parent.fingerprint() == by_folder.fingerprint()


def test_cifar100_and_cifar20(tmp_path):
    raw = write_cifar100(tmp_path)
    c100 = load_dataset("cifar100", str(tmp_path), val_fraction=0.0)
    assert c100.n_classes == 100 and c100.train.x.shape == (40, 3, 32, 32)
    np.testing.assert_array_equal(c100.train.y.numpy(), raw["fine_train"])
    np.testing.assert_array_equal(c100.train.fine.numpy(), raw["fine_train"])
    np.testing.assert_array_equal(c100.test.y.numpy(), raw["fine_test"])

    c20 = load_dataset("cifar20", str(tmp_path / "cifar-100-python"), val_fraction=0.0)
    assert c20.n_classes == 20
    np.testing.assert_array_equal(c20.train.y.numpy(), raw["fine_train"] // 5)
    np.testing.assert_array_equal(c20.train.fine.numpy(), raw["fine_train"])
    np.testing.assert_array_equal(c20.train.x.numpy(), raw["x_train"].reshape(-1, 3, 32, 32) / np.float32(255))


def test_cifar20_validation_split_keeps_fine_labels(tmp_path):
    write_cifar100(tmp_path, n_test=60)
    data = load_dataset("cifar20", str(tmp_path), val_fraction=0.5)
    for split in (data.val, data.test):
        assert split.fine is not None and len(split.fine) == len(split)
        np.testing.assert_array_equal(split.y.numpy(), split.fine.numpy() // 5)


class _Py2Pickler(pickle._Pickler):
    """Writes bytes and str as Python 2 ``str`` (SHORT_BINSTRING/BINSTRING), as in the official CIFAR files."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def test_cifar_python2_style_pickles_load(tmp_path):
    """The official files: protocol 2, GLOBAL numpy.core.multiarray._reconstruct, Python 2 strings."""
    raw = write_cifar10(tmp_path)
    base = tmp_path / "cifar-10-batches-py"
    for name, start in [("data_batch_1", 0), ("test_batch", None)]:
        x = raw["x_train"][:6] if start == 0 else raw["x_test"]
        y = raw["y_train"][:6] if start == 0 else raw["y_test"]
        stream = io.BytesIO()
        _Py2Pickler(stream, protocol=2).dump({"batch_label": "training batch 1 of 5", "data": x,
                                              "labels": [int(v) for v in y], "filenames": ["a.png"] * len(y)})
        content = stream.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
        assert b"cnumpy.core.multiarray\n_reconstruct\n" in content and b"U\x02u1" in content
        assert b"_codecs" not in content
        (base / name).write_bytes(content)
    data = load_dataset("cifar10", str(tmp_path), val_fraction=0.0)
    np.testing.assert_array_equal(data.train.x[:6].numpy(), raw["x_train"][:6].reshape(-1, 3, 32, 32) / np.float32(255))
    np.testing.assert_array_equal(data.test.y.numpy(), raw["y_test"])


def test_cifar_fortran_order_and_big_endian_arrays_load(tmp_path):
    raw = write_cifar10(tmp_path)
    base = tmp_path / "cifar-10-batches-py"
    x = np.asfortranarray(raw["x_test"])
    _dump(base / "test_batch", {b"data": x, b"labels": raw["y_test"].astype(">i4")}, protocol=2)
    data = load_dataset("cifar10", str(tmp_path), val_fraction=0.0)
    np.testing.assert_array_equal(data.test.x.numpy(), raw["x_test"].reshape(-1, 3, 32, 32) / np.float32(255))
    np.testing.assert_array_equal(data.test.y.numpy(), raw["y_test"])


class Crafted:
    """Pickles as an arbitrary ``__reduce__`` value: hand-made, malformed NumPy reconstruction calls."""

    def __init__(self, reduce_value: tuple) -> None:
        self.reduce_value = reduce_value

    def __reduce__(self):
        return self.reduce_value


_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy._core.multiarray._reconstruct


@pytest.mark.parametrize(
    "data",
    [
        Crafted((np.dtype, ("u1", False, True), (3, "|", None, -1, -1, 0))),  # malformed dtype state
        Crafted((np.dtype, ("u1", False, True), "garbage")),
        Crafted((np.dtype, ("O", False, True), (3, "|", None, None, None, -1, -1, 63))),
        Crafted((_RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (4, 3072), np.dtype("u1"), False, b"\x00" * 10))),
        Crafted((_RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (-4, 3072), np.dtype("u1"), False, b""))),
        Crafted((_RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (2, 3072), np.dtype("u1"), False, [0, 1]))),
        Crafted((_RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (2,), "not a dtype", False, b"\x00\x00"))),
        Crafted((_RECONSTRUCT, (np.ndarray, (0,), b"b"))),  # never given its state
        Crafted((_RECONSTRUCT, (np.dtype, (0,), b"b"), None)),
        np.array([1, "a"], dtype=object),
        np.zeros(2, dtype=[("a", "u1"), ("b", "f4")]),
    ],
    ids=["dtype-state", "dtype-garbage", "object-dtype", "short-data", "negative-shape", "list-data",
         "bad-dtype", "no-state", "not-ndarray", "object-array", "structured"],
)
def test_malformed_numpy_in_cifar_pickle_is_a_data_error(tmp_path, data):
    """NumPy's own unpickling trusts its input (a malformed dtype state crashed the process); refused instead."""
    write_cifar10(tmp_path)
    _dump(tmp_path / "cifar-10-batches-py" / "test_batch", {b"data": data, b"labels": [0, 1]})
    with pytest.raises(DataError, match="test_batch"):
        _RAW_LOADERS["cifar10"](str(tmp_path))


def _build_on_global(module: str, name: str, attribute: str) -> bytes:
    """A pickle that fetches a global and runs BUILD on it with slot state ``{attribute: 1}`` (a setattr)."""
    return (b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n"
            + b"N}" + b"X" + struct.pack("<I", len(attribute)) + attribute.encode() + b"K\x01s" + b"\x86b.")


@pytest.mark.parametrize("module, name", [("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                                          ("_codecs", "encode"), ("numpy", "ndarray")])
def test_cifar_pickle_cannot_modify_the_unpickler_globals(tmp_path, module, name):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(_build_on_global(module, name, "__setstate__"))
    with pytest.raises(DataError, match="test_batch"):
        _RAW_LOADERS["cifar10"](str(tmp_path))
    write_cifar10(tmp_path / "again")  # later loads still work
    assert len(load_dataset("cifar10", str(tmp_path / "again")).train) == 30


@pytest.mark.parametrize("payload", ["system", "eval", "nested"])
def test_malicious_cifar_pickle_is_refused_and_never_runs(tmp_path, payload):
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    evil: object = Evil(marker)
    if payload == "eval":
        class EvalEvil:
            def __reduce__(self):
                return (eval, (f"open({str(marker)!r}, 'w').close()",))
        evil = EvalEvil()
    batch = {b"data": _cifar_rows(np.random.default_rng(0), 6), b"labels": [0] * 6, b"x": evil}
    if payload == "nested":
        batch = {b"data": _cifar_rows(np.random.default_rng(0), 6), b"labels": [0, 1, [evil], 3, 4, 5]}
    _dump(tmp_path / "cifar-10-batches-py" / "data_batch_3", batch)
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", str(tmp_path))
    assert not marker.exists()


def test_cifar_pickle_of_arbitrary_class_is_refused(tmp_path):
    write_cifar10(tmp_path)
    _dump(tmp_path / "cifar-10-batches-py" / "test_batch", {b"data": Path("/etc/passwd"), b"labels": [0]})
    with pytest.raises(DataError, match="refusing to load"):
        load_dataset("cifar10", str(tmp_path))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_cifar_file_is_a_data_error(tmp_path, damage):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    raw = path.read_bytes()
    garbage = random.Random(0).randbytes(4096)
    path.write_bytes({"truncate": raw[: len(raw) // 2], "garbage": garbage, "empty": b""}[damage])
    with pytest.raises(DataError, match="data_batch_2"):
        load_dataset("cifar10", str(tmp_path))


def _damaged_variants(raw: bytes, seed: int, count: int):
    rng = random.Random(seed)
    for i in range(count):
        if i % 3 == 0:
            yield rng.randbytes(rng.randint(0, 300))
        elif i % 3 == 1:
            yield raw[: rng.randint(0, len(raw) - 1)]
        else:
            flipped = bytearray(raw)
            for _ in range(rng.randint(1, 6)):
                flipped[rng.randrange(min(len(flipped), 400))] = rng.getrandbits(8)  # mostly the pickle opcodes
            yield bytes(flipped)


def test_damaged_cifar_files_never_raise_anything_but_data_error(tmp_path):
    write_cifar10(tmp_path, per_batch=2, n_test=4)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    for content in _damaged_variants(path.read_bytes(), seed=7, count=150):
        path.write_bytes(content)
        try:
            _RAW_LOADERS["cifar10"](str(tmp_path))
        except DataError:
            pass


def test_damaged_idx_files_never_raise_anything_but_data_error(tmp_path):
    path = tmp_path / "x-idx3-ubyte.gz"
    raw = gzip.compress(idx_bytes(np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28) % 251))
    for content in _damaged_variants(raw, seed=8, count=150):
        path.write_bytes(content)
        try:
            read_idx(path)
        except DataError:
            pass


@pytest.mark.parametrize(
    "batch, fragment",
    [
        ({b"data": np.zeros((4, 3072), np.uint8)}, "labels"),
        ({b"labels": [0, 1, 2, 3]}, "data"),
        ({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, "3072"),
        ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3}, "labels"),
        ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 10]}, "labels"),
        ([1, 2, 3], "dictionary"),
    ],
)
def test_malformed_cifar_batch_is_a_data_error(tmp_path, batch, fragment):
    write_cifar10(tmp_path)
    _dump(tmp_path / "cifar-10-batches-py" / "data_batch_1", batch)
    with pytest.raises(DataError, match=fragment):
        load_dataset("cifar10", str(tmp_path))


def test_malformed_cifar100_batch_is_a_data_error(tmp_path):
    write_cifar100(tmp_path)
    _dump(tmp_path / "cifar-100-python" / "train", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DataError, match="fine_labels"):
        load_dataset("cifar100", str(tmp_path))


def test_cifar_missing_pieces(tmp_path):
    with pytest.raises(DataError, match="root"):
        load_dataset("cifar10", None)
    with pytest.raises(DataError, match="not found"):
        load_dataset("cifar10", str(tmp_path / "nowhere"))
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError, match="data_batch_4"):
        load_dataset("cifar10", str(tmp_path))
    with pytest.raises(DataError, match="cifar-100-python"):
        load_dataset("cifar100", str(tmp_path))


# ------------------------------------------------------------------------------------------ Fashion-MNIST
def test_read_idx_parses_header_and_data(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "a-idx3-ubyte"
    path.write_bytes(idx_bytes(array))
    np.testing.assert_array_equal(read_idx(path), array)
    assert idx_bytes(array)[:4] == b"\x00\x00\x08\x03"
    gz = tmp_path / "b-idx1-ubyte.gz"
    gz.write_bytes(gzip.compress(idx_bytes(np.array([3, 1, 4], np.uint8))))
    assert idx_bytes(np.array([3, 1, 4], np.uint8))[:8] == b"\x00\x00\x08\x01\x00\x00\x00\x03"
    np.testing.assert_array_equal(read_idx(gz), [3, 1, 4])


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_tiny_idx_loads(tmp_path, gz):
    raw = write_fashion(tmp_path / "fm", gz=gz)
    data = load_dataset("fashion-mnist", str(tmp_path / "fm"))
    assert data.n_classes == 10 and data.input_shape == (1, 28, 28)
    assert len(data.train) == 30 and len(data.val) == 4 and len(data.test) == 16
    np.testing.assert_array_equal(data.train.x[:, 0].numpy(), raw["images_train"] / np.float32(255))
    np.testing.assert_array_equal(data.train.y.numpy(), raw["labels_train"])
    assert float(data.train.x.max()) <= 1.0 and float(data.train.x.min()) >= 0.0
    assert len(data.mean) == 1


def test_fashion_mnist_root_from_environment(tmp_path, monkeypatch):
    write_fashion(tmp_path / "env-fm", n_train=12)
    monkeypatch.setenv("MUAUDIT_FASHION_MNIST_ROOT", str(tmp_path / "env-fm"))
    assert len(load_dataset("fashion-mnist").train) == 12
    write_fashion(tmp_path / "env-fm2", n_train=14)
    monkeypatch.setenv("MUAUDIT_FASHION_MNIST_ROOT", str(tmp_path / "env-fm2"))
    assert len(load_dataset("fashion-mnist").train) == 14  # not a stale cached answer


@pytest.mark.parametrize("damage", ["truncate-gz", "flip-gz", "not-gzip", "short-data", "long-data",
                                    "bad-magic", "float-type", "empty"])
def test_corrupt_idx_is_a_data_error(tmp_path, damage):
    write_fashion(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    packed = path.read_bytes()
    raw = gzip.decompress(packed)
    if damage == "truncate-gz":
        content = packed[: len(packed) // 2]
    elif damage == "flip-gz":
        content = packed[:40] + bytes(b ^ 0xFF for b in packed[40:400]) + packed[400:]
    elif damage == "not-gzip":
        content = raw
    elif damage == "short-data":
        content = gzip.compress(raw[:-10])
    elif damage == "long-data":
        content = gzip.compress(raw + b"\x00")
    elif damage == "bad-magic":
        content = gzip.compress(b"\x08\x03\x00\x00" + raw[4:])
    elif damage == "float-type":
        content = gzip.compress(b"\x00\x00\x0d\x03" + raw[4:])
    else:
        content = b""
    path.write_bytes(content)
    with pytest.raises(DataError, match="train-images"):
        load_dataset("fashion-mnist", str(tmp_path))


def test_fashion_mnist_inconsistent_files(tmp_path):
    write_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(3, np.uint8))))
    with pytest.raises(DataError, match="differ in count"):
        load_dataset("fashion-mnist", str(tmp_path))
    # labels where images belong: a one-dimensional "image" file
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(3, np.uint8))))
    with pytest.raises(DataError, match="t10k-images"):
        load_dataset("fashion-mnist", str(tmp_path))


def test_fashion_mnist_missing_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset("fashion-mnist", str(tmp_path / "absent"))
    write_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_dataset("fashion-mnist", str(tmp_path))


def test_real_fashion_mnist_files_load():
    if not (REAL_FASHION / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"{REAL_FASHION} is absent (apt-get install dataset-fashion-mnist)")
    data = load_dataset("fashion-mnist", str(REAL_FASHION))
    assert len(data.train) == 60000 and len(data.val) + len(data.test) == 10000
    assert len(data.val) == 2000
    assert data.train.x.shape == (60000, 1, 28, 28)
    assert torch.bincount(data.train.y).tolist() == [6000] * 10
    assert torch.bincount(data.val.y).tolist() == [200] * 10
    assert 0.0 <= float(data.train.x.min()) and float(data.train.x.max()) <= 1.0
    assert 0.2 < data.mean[0] < 0.4


# -------------------------------------------------------------------------------------------------- npz
def test_npz_vectors(tmp_path):
    x = np.random.default_rng(0).random((20, 6)).astype(np.float64)
    path = write_npz(tmp_path / "v.npz", x_train=x, y_train=np.arange(20) % 3, x_test=x[:15],
                     y_test=np.arange(15) % 3)
    data = load_dataset("npz", str(path))
    assert data.input_shape == (6,) and data.n_classes == 3
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    np.testing.assert_allclose(data.train.x.numpy(), x.astype(np.float32))  # floats are kept as they are
    assert len(data.mean) == 1 and len(data.std) == 1


def test_npz_grey_images_gain_a_channel_and_uint8_is_scaled(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (20, 5, 7), dtype=np.uint8)
    path = write_npz(tmp_path / "g.npz", x_train=x, y_train=np.arange(20) % 4, x_test=x[:12],
                     y_test=np.arange(12) % 4)
    data = load_dataset("npz", str(path), val_fraction=0.0)
    assert data.input_shape == (1, 5, 7) and data.n_classes == 4
    np.testing.assert_array_equal(data.train.x.numpy()[:, 0], x / np.float32(255))
    assert len(data.val) == 0 and data.val.x.shape == (0, 1, 5, 7)


def test_npz_colour_images(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (20, 3, 4, 4), dtype=np.uint8)
    path = write_npz(tmp_path / "c.npz", x_train=x, y_train=np.arange(20) % 2, x_test=x[:10],
                     y_test=np.arange(10) % 2)
    data = load_dataset("npz", str(path))
    assert data.input_shape == (3, 4, 4) and len(data.mean) == 3
    assert float(data.train.x.max()) <= 1.0


def _good_npz() -> dict[str, np.ndarray]:
    return {"x_train": np.zeros((8, 4), np.float32), "y_train": np.arange(8) % 2,
            "x_test": np.zeros((6, 4), np.float32), "y_test": np.arange(6) % 2}


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"x_test": None}, "x_test"),
        ({"y_train": None}, "y_train"),
        ({"x_train": np.full((8, 4), np.nan, np.float32)}, "NaN"),
        ({"x_test": np.full((6, 4), np.inf, np.float32)}, "NaN or infinite"),
        ({"y_train": np.array([0, 1, -1, 0, 1, 0, 1, 0])}, "non-negative"),
        ({"y_test": np.arange(6) / 2.0}, "integers"),
        ({"y_train": np.arange(7) % 2}, "shape"),
        ({"x_train": np.zeros((8, 1, 1, 2, 2), np.float32)}, "shape"),
        ({"y_train": np.zeros((8, 1), np.int64)}, "shape"),
        ({"x_test": np.zeros((6, 5), np.float32)}, "shape"),
        ({"x_test": np.zeros((0, 4), np.float32), "y_test": np.zeros(0, np.int64)}, "empty"),
    ],
)
def test_npz_validation(tmp_path, change, fragment):
    arrays = {**_good_npz(), **change}
    path = write_npz(tmp_path / "bad.npz", **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(DataError, match=fragment):
        load_dataset("npz", str(path))


def test_npz_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset("npz", str(tmp_path / "missing.npz"))
    with pytest.raises(DataError, match="not found"):
        load_dataset("npz", None)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(os.urandom(256))
    with pytest.raises(DataError, match="junk.npz"):
        load_dataset("npz", str(junk))
    single = tmp_path / "single.npz"
    with open(single, "wb") as handle:  # a lone .npy array, not an archive of named arrays
        np.save(handle, np.zeros(3))
    with pytest.raises(DataError, match="single.npz"):
        load_dataset("npz", str(single))
    objects = tmp_path / "objects.npz"
    np.savez(objects, **{**_good_npz(), "x_train": np.array([object()] * 8)})
    with pytest.raises(DataError, match="objects.npz"):
        load_dataset("npz", str(objects))


def test_npz_rewritten_in_place_is_reloaded(tmp_path):
    path = tmp_path / "d.npz"
    write_npz(path, **_good_npz())
    first = load_dataset("npz", str(path))
    write_npz(path, **{**_good_npz(), "x_train": np.ones((8, 4), np.float32)})
    second = load_dataset("npz", str(path))
    assert first.fingerprint() != second.fingerprint()


# ------------------------------------------------------------------------------------------------ digits
def test_digits():
    data = load_dataset("digits")
    assert data.input_shape == (1, 8, 8) and data.n_classes == 10
    assert len(data.train) + len(data.val) + len(data.test) == 1797
    assert float(data.train.x.min()) >= 0.0 and float(data.train.x.max()) <= 1.0
    again = load_dataset("digits")  # decoded once, then a private copy per load
    assert again is not data and again.train.x is not data.train.x
    assert torch.equal(again.train.x, data.train.x) and again.fingerprint() == data.fingerprint()


def test_unknown_dataset_and_bad_fraction():
    with pytest.raises(DataError, match="unknown dataset 'mnist'.*digits"):
        load_dataset("mnist")
    for fraction in (-0.1, 1.0, 1.5):
        with pytest.raises(DataError, match="val_fraction"):
            load_dataset("digits", val_fraction=fraction)


# ----------------------------------------------------------------------------------------- validation split
def _ids(split: Split) -> np.ndarray:
    return split.x[:, 0].numpy().astype(np.int64)


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.5, 0.75])
def test_validation_split_is_disjoint_stratified_and_sized(tmp_path, fraction):
    data = load_dataset("npz", str(ids_npz(tmp_path / "ids.npz")), val_fraction=fraction)
    val, test = _ids(data.val), _ids(data.test)
    assert len(val) == int(np.floor(fraction * 200)) and len(val) + len(test) == 200
    assert not set(val) & set(test)
    assert sorted(np.concatenate([val, test])) == list(range(200))
    assert list(val) == sorted(val) and list(test) == sorted(test)
    y_all = (np.arange(200) * 7) % 5
    np.testing.assert_array_equal(data.val.y.numpy(), y_all[val])
    counts = np.bincount(data.val.y.numpy(), minlength=5)
    assert np.all(np.abs(counts - fraction * 40) <= 1), counts  # 40 test examples per class


def test_validation_split_is_deterministic_and_ignores_global_seeds(tmp_path):
    path = ids_npz(tmp_path / "ids.npz")
    first = _ids(load_dataset("npz", str(path)).val)
    np.random.seed(123)
    torch.manual_seed(123)
    raw_test = Split(torch.arange(200, dtype=torch.float32)[:, None], torch.from_numpy((np.arange(200) * 7) % 5))
    again, _ = _carve_validation(raw_test, 0.2)
    np.testing.assert_array_equal(first, again.x[:, 0].numpy().astype(np.int64))
    assert VALIDATION_SEED == 20240101


def test_validation_fraction_zero_keeps_the_whole_test_split(tmp_path):
    data = load_dataset("npz", str(ids_npz(tmp_path / "ids.npz")), val_fraction=0.0)
    assert len(data.val) == 0 and len(data.test) == 200
    np.testing.assert_array_equal(_ids(data.test), np.arange(200))


def test_validation_split_stratifies_when_a_class_is_absent_from_test():
    y = np.array([0] * 20 + [2] * 20)  # class 1 never occurs in the test split
    split = Split(torch.arange(40, dtype=torch.float32)[:, None], torch.from_numpy(y))
    val, _ = _carve_validation(split, 0.5)
    assert np.bincount(val.y.numpy()).tolist() == [10, 0, 10]


@pytest.mark.parametrize("n, fraction", [(12, 0.2), (5, 0.5), (3, 0.5), (20, 0.05)])
def test_validation_split_of_a_tiny_test_set(n, fraction):
    """Too few examples per class to stratify: the split still happens (unstratified) or fails cleanly."""
    split = Split(torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n) % 10)
    val, test = _carve_validation(split, fraction)
    assert len(val) == int(np.floor(fraction * n)) and len(val) + len(test) == n


@pytest.mark.parametrize("n, n_classes, fraction", [(3, 2, 0.2), (10, 5, 0.05), (0, 1, 0.5)])
def test_validation_split_too_small_is_a_data_error(n, n_classes, fraction):
    split = Split(torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n) % n_classes)
    with pytest.raises(DataError, match=f"val_fraction {fraction} cannot split a test set of {n} examples"):
        _carve_validation(split, fraction)


# ------------------------------------------------------------------------------ fingerprint, Split, stats
def _bundle(x: torch.Tensor, y: torch.Tensor, fine: torch.Tensor | None = None) -> DataBundle:
    split = Split(x, y, fine)
    return DataBundle("t", split, split.subset([]), split, 3, (0.0,), (1.0,))


def test_fingerprint_tracks_inputs_labels_and_fine_labels():
    x, y = torch.rand(10, 1, 2, 2), torch.arange(10) % 3
    base = _bundle(x, y).fingerprint()
    assert len(base) == 64 and base == _bundle(x.clone(), y.clone()).fingerprint()
    x2 = x.clone()
    x2[4, 0, 1, 1] += 0.5
    assert _bundle(x2, y).fingerprint() != base
    y2 = y.clone()
    y2[0] = 2
    assert _bundle(x, y2).fingerprint() != base
    fine = torch.arange(10)
    fine2 = fine.clone()
    fine2[3] = 9
    assert _bundle(x, y, fine).fingerprint() != _bundle(x, y, fine2).fingerprint()


def test_split_subset_and_batches():
    split = Split(torch.arange(10, dtype=torch.float32)[:, None], torch.arange(10), torch.arange(10) * 2)
    sub = split.subset([7, 2, 5])
    assert sub.y.tolist() == [7, 2, 5] and sub.fine.tolist() == [14, 4, 10] and len(sub) == 3
    assert len(split.subset(np.array([], dtype=np.int64))) == 0
    batches = list(split.batches(4))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    assert torch.cat([b[1] for b in batches]).tolist() == list(range(10))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    first = torch.cat([b[1] for b in split.batches(3, shuffle=True, generator=g1)])
    second = torch.cat([b[1] for b in split.batches(3, shuffle=True, generator=g2)])
    assert first.tolist() == second.tolist() and sorted(first.tolist()) == list(range(10))


def test_channel_statistics_come_from_the_training_split(tmp_path):
    x = np.zeros((10, 2, 3, 3), np.float32)
    x[:, 1] = 0.5
    x[::2, 0] = 1.0
    path = write_npz(tmp_path / "s.npz", x_train=x, y_train=np.arange(10) % 2, x_test=x[:6] * 0,
                     y_test=np.arange(6) % 2)
    data = load_dataset("npz", str(path))
    assert data.mean == pytest.approx((0.5, 0.5))
    assert data.std[0] == pytest.approx(np.std(x[:, 0], ddof=1)) and data.std[1] == pytest.approx(1e-6)
