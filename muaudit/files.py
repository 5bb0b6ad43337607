"""Atomic file publication that respects the umask.

``tempfile.mkstemp`` creates its file with mode 0600 whatever the umask, so a file renamed into place from it
would be private to its owner even where the user's umask shares it. :func:`publish` gives the temporary file the
mode an ordinary ``open(path, "w")`` would have (``0o666 & ~umask``) before the atomic rename.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process umask (read by setting and restoring it: the only portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish(tmp: str | Path, final: str | Path) -> None:
    """Give ``tmp`` the umask's default file mode, then atomically rename it to ``final``."""
    os.chmod(tmp, 0o666 & ~current_umask())
    os.replace(tmp, final)


def write_json_best_effort(path: Path, payload: Any) -> bool:
    """Write ``payload`` as JSON atomically; a failure (a read-only cache) is ignored: it only costs speed.
    Returns whether the file was written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(payload, handle, sort_keys=True)
            publish(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        return False
    return True
