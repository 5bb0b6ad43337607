"""Default settings shared by the CLI and the library, in a module that imports nothing (cheap CLI start-up)."""
from __future__ import annotations

import os
from pathlib import Path

#: The data sets muaudit can load (:func:`muaudit.data.load_dataset`).
DATASETS = ("digits", "fashion-mnist", "cifar10", "cifar100", "cifar20", "npz")
#: Data sets bundled with a library: a dataset root (``--data-root``, ``[dataset] root``) does not apply to them.
ROOTLESS_DATASETS = ("digits",)
#: Attacks of a scorecard unless told otherwise: the population attacks, which need no extra models.
DEFAULT_ATTACKS = "loss,entropy-lr,entropy-svc"
#: ``muaudit tune``: configurations per method (the default included), proxy forget sets, gold models per proxy.
DEFAULT_BUDGET = 16
DEFAULT_PROXIES = 2
DEFAULT_PROXY_GOLDS = 2
#: Most gold models an audit trains (``--gold-seeds``) unless ``$MUAUDIT_MAX_GOLD_SEEDS`` raises the bound: each is
#: a full retrain, so a typo such as ``--gold-seeds 1000000`` should fail at once rather than run for weeks.
MAX_GOLD_SEEDS = 64
#: Size of the retain evaluation sample of readouts and attacks (``--retain-sample``; ``None`` = all of D_r).
DEFAULT_RETAIN_SAMPLE = 10_000


def default_cache_dir() -> Path:
    """``$MUAUDIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/muaudit``, else ``~/.cache/muaudit``."""
    env = os.environ.get("MUAUDIT_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "muaudit"


def max_gold_seeds() -> int:
    """:data:`MAX_GOLD_SEEDS`, or the positive integer in ``$MUAUDIT_MAX_GOLD_SEEDS``."""
    from muaudit.errors import ConfigurationError

    text = os.environ.get("MUAUDIT_MAX_GOLD_SEEDS", "").strip()
    if not text:
        return MAX_GOLD_SEEDS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigurationError(f"$MUAUDIT_MAX_GOLD_SEEDS must be a positive integer, got {text!r}")
    return value
