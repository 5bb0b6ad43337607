"""Per-entry cache locks: two processes sharing one cache train each model once.

A process about to train a model that the cache lacks takes the entry's lock (``<cache>/locks/<key>.lock``, a
:class:`filelock.FileLock`), looks in the cache again, and trains only if the entry is still missing; a second
process asking for the same model waits on the lock and then loads what the first one stored. Several entries are
locked in sorted key order, so two processes can never wait on each other. The lock files are left in place
(removing them would race with a waiting process); they are empty.

A cache directory where no lock can be created (read-only) gets no locking: entries are still written
atomically, so the worst case is the duplicated work this module exists to avoid.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterable, Iterator


@contextmanager
def entry_locks(root: Path, keys: Iterable[str]) -> Iterator[None]:
    """Hold the locks of the cache entries ``keys`` under ``root`` (see the module docstring)."""
    from filelock import FileLock

    keys = sorted(set(keys))
    with ExitStack() as stack:
        if keys:
            try:
                folder = Path(root) / "locks"
                folder.mkdir(parents=True, exist_ok=True)
                for key in keys:
                    stack.enter_context(FileLock(str(folder / f"{key}.lock")))
            except OSError:  # no lock possible here: proceed unlocked (module docstring)
                stack.close()
        yield
