"""Ray's import and address checks, without torch (the CLI checks ``--executor ray`` options before any heavy
import; :class:`muaudit.engine.RayExecutor` uses the same functions)."""
from __future__ import annotations

import importlib.util
import socket
from typing import Any

from muaudit.errors import ConfigurationError

#: Seconds an explicit ``--ray-address`` gets to answer a TCP connection before the run fails (bounded failure).
RAY_CONNECT_TIMEOUT_S = 10.0
RAY_EXTRA_HINT = "pip install 'muaudit[ray]'"
_MISSING = f"--executor ray needs Ray, which is not installed: {RAY_EXTRA_HINT}"


def ray_installed() -> bool:
    """Whether Ray can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("ray") is not None
    except ValueError:  # sys.modules["ray"] is None: import blocked
        return False


def import_ray() -> Any:
    """The ``ray`` module, or a one-line :class:`ConfigurationError` naming the extra."""
    try:
        import ray
    except ImportError:
        raise ConfigurationError(_MISSING) from None
    return ray


def missing_ray_message() -> str:
    return _MISSING


def check_ray_address(address: str, timeout: float | None = None) -> None:
    """Fail within ``timeout`` seconds (default :data:`RAY_CONNECT_TIMEOUT_S`) when nothing answers at ``address``
    (``host:port`` or ``ray://host:port``); Ray itself may retry for minutes."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigurationError(f"--ray-address must be auto, host:port or ray://host:port, got {address!r}")
    limit = RAY_CONNECT_TIMEOUT_S if timeout is None else timeout
    try:
        with socket.create_connection((host, int(port)), timeout=limit):
            pass
    except OSError as exc:
        raise ConfigurationError(f"cannot reach Ray at {address} within {limit:g} s: "
                                 f"{exc.strerror or type(exc).__name__}") from None
