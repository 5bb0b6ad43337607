"""Default settings shared by the CLI and the library, in a module that imports nothing (cheap CLI start-up)."""
from __future__ import annotations

#: Attacks of a scorecard unless told otherwise: the population attacks, which need no extra models.
DEFAULT_ATTACKS = "loss,entropy-lr,entropy-svc"
#: ``muaudit tune``: configurations per method (the default included), proxy forget sets, gold models per proxy.
DEFAULT_BUDGET = 16
DEFAULT_PROXIES = 2
DEFAULT_PROXY_GOLDS = 2
#: Size of the retain evaluation sample of readouts and attacks (``--retain-sample``; ``None`` = all of D_r).
DEFAULT_RETAIN_SAMPLE = 10_000
