"""JSON-safe values for muaudit's result files (scorecards, tuning results)."""
from __future__ import annotations

import math
from typing import Any


def json_safe(value: Any) -> Any:
    """Tuples to lists, NumPy scalars to Python numbers, non-finite floats to ``None`` (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        value = value.item()  # a NumPy scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
