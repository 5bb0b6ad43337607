"""Checkpoints that load without executing code.

Two formats, chosen by file extension:
- ``.safetensors``: the state dict, with muaudit's metadata as a JSON string in the safetensors header.
- anything else (``.pt``, ``.pth``): ``torch.save`` of ``{"state_dict": ..., "muaudit_metadata": "<json>"}``,
  which :func:`torch.load` reads with ``weights_only=True``.

A bare third-party state dict (no metadata) is accepted when the caller supplies the task and architecture.
Loading never falls back to unpickling arbitrary objects. Writes are atomic (temporary file, then rename).
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from muaudit.errors import CheckpointError
from muaudit.files import publish

FORMAT_VERSION = 1
META_KEY = "muaudit_metadata"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: its state dict, its metadata (``None`` for a bare state dict) and its SHA-256."""

    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any] | None
    sha256: str
    path: str


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_dict_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """Content hash of a state dict (names, dtypes, shapes and values), independent of file format."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(model: nn.Module, path: str | Path, metadata: Mapping[str, Any]) -> str:
    """Atomically write ``model``'s state dict and ``metadata`` to ``path``; returns the file's SHA-256.

    A model with NaN or infinite weights is never written (:class:`CheckpointError`)."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    _check_finite(state, path)
    meta = json.dumps({"format_version": FORMAT_VERSION, **metadata}, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(state, tmp, metadata={META_KEY: meta})
        else:
            torch.save({"state_dict": state, META_KEY: meta}, tmp)
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return file_sha256(path)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint safely; raise :class:`CheckpointError` with one clear line on any problem.

    Warnings raised while reading (torch's, safetensors') are swallowed: a problem is one line, an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _load_checkpoint(Path(path))


def _load_checkpoint(path: Path) -> Checkpoint:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    sha = file_sha256(path)
    if path.suffix == ".safetensors":
        state, meta_text = _load_safetensors(path)
    else:
        state, meta_text = _load_torch(path)
    metadata = None
    if meta_text is not None:
        try:
            metadata = json.loads(meta_text)
        except (ValueError, RecursionError):
            raise CheckpointError(f"{path}: metadata is not valid JSON") from None
        if not isinstance(metadata, dict):
            raise CheckpointError(f"{path}: metadata must be a JSON object, found {type(metadata).__name__}")
    _check_finite(state, path)
    return Checkpoint(state, metadata, sha, str(path))


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = (handle.metadata() or {}).get(META_KEY)
        return load_file(str(path)), meta
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def _load_torch(path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused to load: {_unpickling_reason(str(exc))}; muaudit loads only "
                              "tensors and plain containers (weights_only=True) and never unpickles objects") from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, TypeError, AttributeError,
            OverflowError, MemoryError) as exc:  # what torch.load raises on corrupt or truncated files
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({detail})") from None
    if isinstance(raw, dict) and "state_dict" in raw and isinstance(raw["state_dict"], dict):
        meta = raw.get(META_KEY)
        return _tensors_only(raw["state_dict"], path), meta if isinstance(meta, str) else None
    if isinstance(raw, dict):
        return _tensors_only(raw, path), None
    raise CheckpointError(f"{path}: expected a state dict, found {type(raw).__name__}")


def _unpickling_reason(message: str) -> str:
    """The informative line of torch's weights-only refusal (its advice to disable the check is dropped)."""
    found = re.search(r"Trying to load unsupported GLOBAL \S+|Unsupported global: GLOBAL \S+|Unsupported \w+ \S+",
                      message)
    if found:
        return found.group(0).rstrip(".")
    return "not a plain state dict (or not a PyTorch checkpoint at all)"


def _tensors_only(raw: Mapping[Any, Any], path: Path) -> dict[str, torch.Tensor]:
    bad = [k for k, v in raw.items() if not isinstance(v, torch.Tensor)]
    if bad or not raw:
        raise CheckpointError(f"{path}: not a state dict of tensors (entry {bad[0]!r})" if bad
                              else f"{path}: the state dict is empty")
    return {str(k): v for k, v in raw.items()}


def _check_finite(state: Mapping[str, torch.Tensor], path: Path) -> None:
    for name, tensor in state.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: parameter {name!r} contains NaN or infinite values")


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """Load ``state`` into ``model`` strictly; an architecture mismatch is a :class:`CheckpointError`."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise CheckpointError(f"{source}: does not match the architecture ({detail}, "
                              f"{len(missing)} missing and {len(unexpected)} unexpected keys)")
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(f"{source}: does not match the architecture ({name!r} has shape "
                                  f"{tuple(tensor.shape)}, expected {tuple(expected[name].shape)})")
        _check_dtype(name, tensor, expected[name], source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.load_state_dict(state, strict=True)
    return model


def _check_dtype(name: str, tensor: torch.Tensor, expected: torch.Tensor, source: str) -> None:
    """Refuse a value that loading would silently cast: integer, boolean or complex where the model holds
    floats (or floats where it holds integers, such as BatchNorm's batch counter). Float precisions may differ."""
    if tensor.is_complex() or tensor.is_floating_point() != expected.is_floating_point() or \
            (tensor.dtype == torch.bool) != (expected.dtype == torch.bool):
        raise CheckpointError(f"{source}: {name!r} holds {str(tensor.dtype).removeprefix('torch.')} values, "
                              f"expected {str(expected.dtype).removeprefix('torch.')}")
