"""Default settings shared by the CLI and the library, in a module that imports nothing (cheap CLI start-up)."""
from __future__ import annotations

import os
from pathlib import Path

#: The data sets muaudit can load (:func:`muaudit.data.load_dataset`).
DATASETS = ("digits", "fashion-mnist", "cifar10", "cifar100", "cifar20", "npz")
#: Attacks of a scorecard unless told otherwise: the population attacks, which need no extra models.
DEFAULT_ATTACKS = "loss,entropy-lr,entropy-svc"
#: ``muaudit tune``: configurations per method (the default included), proxy forget sets, gold models per proxy.
DEFAULT_BUDGET = 16
DEFAULT_PROXIES = 2
DEFAULT_PROXY_GOLDS = 2
#: Size of the retain evaluation sample of readouts and attacks (``--retain-sample``; ``None`` = all of D_r).
DEFAULT_RETAIN_SAMPLE = 10_000


def default_cache_dir() -> Path:
    """``$MUAUDIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/muaudit``, else ``~/.cache/muaudit``."""
    env = os.environ.get("MUAUDIT_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "muaudit"
