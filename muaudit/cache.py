"""A content-addressed cache for trained models and tensor statistics (safetensors + JSON, never pickle).

The key of an entry is the SHA-256 of a canonical JSON *configuration* (task hash, role, seed, schema). Each
entry is ``<key>.safetensors`` holding the tensors, the configuration and a SHA-256 of the tensors in its header;
on load the stored configuration must equal the requested one and the tensors must match their digest, so a
corrupt or mismatched entry is rebuilt, never used.

Location: ``--cache-dir``, else ``$MUAUDIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/muaudit``, else
``~/.cache/muaudit``.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from muaudit.checkpoint import state_dict_sha256
from muaudit.defaults import default_cache_dir
from muaudit.errors import ConfigurationError
from muaudit.files import publish

CACHE_SCHEMA = 1


def _default_origin() -> str:
    return "$MUAUDIT_CACHE_DIR" if os.environ.get("MUAUDIT_CACHE_DIR") else "the default cache directory"


def check_cache_dir(root: Path, origin: str) -> None:
    """Fail early, with one line, when ``root`` cannot hold a cache: it (or the nearest existing folder above it,
    where it will be created) must be a writable directory. Nothing is created here."""
    existing = root
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    problem = None
    if existing == root and not root.is_dir():
        problem = "not a directory"
    elif not existing.is_dir():
        problem = f"{existing} is not a directory"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = "not writable" if existing == root else f"{existing} is not writable"
    if problem is not None:
        raise ConfigurationError(f"cannot use {root} as the model cache ({origin}): {problem}")


class TensorCache:
    """Store and fetch named tensor dictionaries under a configuration."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        check_cache_dir(self.root, "--cache-dir" if root is not None else _default_origin())

    @staticmethod
    def key(config: Mapping[str, Any]) -> str:
        text = json.dumps({"cache_schema": CACHE_SCHEMA, **config}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, config: Mapping[str, Any]) -> Path:
        key = self.key(config)
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, config: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """The tensors and extra metadata stored under ``config``, or ``None`` if absent or mismatched."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        path = self.path(config)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                header = json.loads((handle.metadata() or {}).get("muaudit_cache", "{}"))
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError):
            return None
        expected = json.loads(json.dumps({"cache_schema": CACHE_SCHEMA, **config}, sort_keys=True))
        if not isinstance(header, dict) or header.get("config") != expected:
            return None
        if header.get("sha256") != state_dict_sha256(tensors):  # damaged tensor data
            return None
        extra = header.get("extra", {})
        return (tensors, extra) if isinstance(extra, dict) else None

    def put(self, config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor],
            extra: Mapping[str, Any] | None = None) -> Path:
        """Atomically store ``tensors`` under ``config`` with JSON-serialisable ``extra`` metadata."""
        from safetensors.torch import save_file

        path = self.path(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        contiguous = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
        header = {"config": {"cache_schema": CACHE_SCHEMA, **config}, "extra": dict(extra or {}),
                  "sha256": state_dict_sha256(contiguous)}
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file(contiguous, tmp, metadata={"muaudit_cache": json.dumps(header, sort_keys=True)})
            publish(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path
