"""Bring your own architecture: a builder function named ``factory:MODULE:CALLABLE``.

A builder is called as ``build(input_shape, n_classes, **options)`` and returns the network *without*
normalisation (muaudit puts its normalisation layer in front, as for the zoo's architectures, so the model's keys
are ``net.<your keys>``). It is given on the command line as ``--arch-factory pkg.module:build`` (importable, or a
module in the working directory), or
from Python as the callable itself (:func:`factory_arch` registers it for this process, so a function defined in a
notebook works too).

The cache key of every model built from a factory includes the builder's qualified name *and a SHA-256 of its
source* (:func:`factory_digest`): editing the builder retrains the gold models instead of reusing stale ones. A
builder whose source cannot be read (a C extension, a lambda typed at a prompt) is refused, since its cache
entries could not be told apart.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import sys
from typing import Any, Callable

from muaudit.errors import TaskError

PREFIX = "factory:"
_REGISTERED: dict[str, Callable[..., Any]] = {}


def factory_arch(builder: Callable[..., Any] | str) -> str:
    """The ``arch`` string of ``builder`` (a callable, or ``"module:callable"``); callables are registered."""
    if isinstance(builder, str):
        target = builder[len(PREFIX):] if builder.startswith(PREFIX) else builder
        module, sep, name = target.partition(":")
        if not sep or not module or not name:
            raise TaskError(f"an architecture factory is given as MODULE:CALLABLE (e.g. mypkg.models:build), "
                            f"got {builder!r}")
        return PREFIX + target
    if not callable(builder):
        raise TaskError(f"an architecture factory must be callable, got {type(builder).__name__}")
    arch = f"{PREFIX}{builder.__module__}:{builder.__qualname__}"
    _REGISTERED[arch] = builder
    return arch


def resolve_factory(arch: str) -> Callable[..., Any]:
    """The builder named by ``arch`` (registered in this process, else imported)."""
    if arch in _REGISTERED:
        return _REGISTERED[arch]
    module_name, _, qualname = arch[len(PREFIX):].partition(":")
    try:
        obj: Any = _import(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure of the user's module is one clear line
        raise TaskError(f"architecture factory {arch[len(PREFIX):]!r}: cannot import {module_name!r}: "
                        f"{type(exc).__name__}: {exc}") from None
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise TaskError(f"architecture factory {arch[len(PREFIX):]!r}: {module_name!r} has no {qualname!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TaskError(f"architecture factory {arch[len(PREFIX):]!r} is not callable")
    return obj


def _import(module_name: str) -> Any:
    """Import ``module_name``; a module in the working directory is found as ``python -m`` would find it (the
    ``muaudit`` console script does not put the working directory on ``sys.path``)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name.partition(".")[0] or os.getcwd() in sys.path:
            raise
        sys.path.insert(0, os.getcwd())
        return importlib.import_module(module_name)


def factory_digest(arch: str) -> str:
    """SHA-256 of the qualified name and the source of the builder (a cache-key part)."""
    builder = resolve_factory(arch)
    try:
        source = inspect.getsource(builder)
    except (OSError, TypeError):
        raise TaskError(f"architecture factory {arch[len(PREFIX):]!r}: its source cannot be read, so its models "
                        f"could not be cached safely; define it in a .py file or a notebook cell") from None
    return hashlib.sha256(f"{arch}\n{source}".encode()).hexdigest()
