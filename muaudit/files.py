"""Atomic file publication that respects the umask.

``tempfile.mkstemp`` creates its file with mode 0600 whatever the umask, so a file renamed into place from it
would be private to its owner even where the user's umask shares it. :func:`publish` gives the temporary file the
mode an ordinary ``open(path, "w")`` would have (``0o666 & ~umask``) before the atomic rename.
"""
from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    """The process umask (read by setting and restoring it: the only portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish(tmp: str | Path, final: str | Path) -> None:
    """Give ``tmp`` the umask's default file mode, then atomically rename it to ``final``."""
    os.chmod(tmp, 0o666 & ~current_umask())
    os.replace(tmp, final)
