"""Declarative hyperparameters for plugins (after scikit-learn's ``_param_validation``).

A plugin declares a tuple of :class:`Param`; the same declaration validates keyword arguments, parses CLI
strings (``--method-arg lr=0.01``) and is shown by ``muaudit list``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from muaudit.errors import ParameterError

_TYPES: dict[type, str] = {int: "an int", float: "a float", bool: "a bool", str: "a str"}
_CLOSED = ("both", "left", "right", "neither")


@dataclass(frozen=True)
class Interval:
    """A numeric range; ``None`` bounds are open-ended and admit finite values only (``lr=inf`` is not "in the
    range (0, inf)"); a parameter that gives infinity a meaning declares the infinite bound, e.g.
    ``Interval(0, math.inf)``."""

    low: float | None = None
    high: float | None = None
    closed: str = "both"  # "both", "left", "right" or "neither"

    def __post_init__(self) -> None:
        if self.closed not in _CLOSED:
            raise ParameterError(f"Interval closed must be one of {', '.join(_CLOSED)}, got {self.closed!r}")
        if any(b is not None and math.isnan(b) for b in (self.low, self.high)):
            raise ParameterError("Interval bounds must not be NaN")
        if self.low is not None and self.high is not None and (
            self.low > self.high or (self.low == self.high and self.closed != "both")
        ):
            raise ParameterError(f"Interval {self} is empty")

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and (math.isnan(value) or (value == math.inf and self.high is None)
                                         or (value == -math.inf and self.low is None)):
            return False
        low_ok = self.low is None or value > self.low or (value == self.low and self.closed in ("both", "left"))
        high_ok = self.high is None or value < self.high or (value == self.high and self.closed in ("both", "right"))
        return low_ok and high_ok

    def __str__(self) -> str:
        left = "[" if self.closed in ("both", "left") and self.low is not None else "("
        right = "]" if self.closed in ("both", "right") and self.high is not None else ")"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"in the range {left}{low}, {high}{right}"


@dataclass(frozen=True)
class Choice:
    """A finite set of allowed values."""

    options: tuple[Any, ...]

    def contains(self, value: Any) -> bool:
        return value in self.options

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)


@dataclass(frozen=True)
class Search:
    """Where ``muaudit tune`` may look for a parameter: ``[low, high]`` (log-uniform when ``log``) or ``choices``.

    A unit-interval coordinate ``u`` (from a Latin hypercube, see :mod:`muaudit.tune`) maps to a value with
    :meth:`value`: numbers by linear or logarithmic interpolation (integers rounded), choices by equal bins.
    """

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.choices:
            if self.low is not None or self.high is not None or self.log:
                raise ParameterError("a Search has either choices or a [low, high] range, not both")
            return
        if self.low is None or self.high is None or not self.low < self.high:
            raise ParameterError(f"a Search range needs low < high, got [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise ParameterError(f"a log-scale Search needs low > 0, got {self.low}")

    @property
    def size(self) -> float:
        """The number of distinct values (``inf`` for a continuous range)."""
        return float(len(self.choices)) if self.choices else math.inf

    def value(self, u: float, kind: type) -> Any:
        if self.choices:
            return self.choices[min(int(u * len(self.choices)), len(self.choices) - 1)]
        low, high = float(self.low), float(self.high)  # type: ignore[arg-type]
        x = math.exp(math.log(low) + u * (math.log(high) - math.log(low))) if self.log else low + u * (high - low)
        if kind is int:
            return int(min(max(round(x), math.ceil(low)), math.floor(high)))
        return float(f"{x:.3g}")  # three significant digits: readable, and distinct enough for a search

    def __str__(self) -> str:
        if self.choices:
            return "{" + ", ".join(repr(c) for c in self.choices) + "}"
        return f"[{self.low:g}, {self.high:g}]" + (" log" if self.log else "")


@dataclass(frozen=True)
class Param:
    """One hyperparameter: name, type, default, constraint, a one-line help text and its tuning range.

    ``nullable`` allows ``None`` (written ``none`` on the command line). ``search`` is where ``muaudit tune``
    may look (``None``: the parameter is not tuned).
    """

    name: str
    type: type
    default: Any
    help: str
    constraint: Interval | Choice | None = None
    nullable: bool = False
    search: Search | None = None

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            supported = ", ".join(t.__name__ for t in _TYPES)
            raise ParameterError(f"parameter {self.name!r} has unsupported type {self.type!r} (use {supported})")
        if self.search is not None:
            self._check_search(self.search)

    def _check_search(self, search: Search) -> None:
        """Every value the search can produce must pass the constraint."""
        ends = search.choices or (search.value(0.0, self.type), search.value(1.0, self.type))
        for value in ends:
            try:
                self.check("the search space", value)
            except ParameterError as exc:
                raise ParameterError(f"the search range of {self.name!r} leaves its constraint: {exc}") from None

    def describe(self) -> str:
        rule = f" {self.constraint}" if self.constraint is not None else ""
        tune = f"; tuned over {self.search}" if self.search is not None else ""
        return f"{self.name}: {self.type.__name__}{rule} (default {self.default!r}{tune}) - {self.help}"

    def check(self, owner: str, value: Any) -> Any:
        """Return ``value`` coerced to the declared type, or raise :class:`ParameterError`."""
        if value is None and self.nullable:
            return None
        value = self._coerce(owner, value)
        if self.constraint is not None and not self.constraint.contains(value):
            raise ParameterError(
                f"The {self.name!r} parameter of {owner} must be {_TYPES[self.type]} {self.constraint}. "
                f"Got {value!r} instead."
            )
        return value

    def _coerce(self, owner: str, value: Any) -> Any:
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, self.type) and not (self.type is int and isinstance(value, bool)):
            return value
        raise ParameterError(
            f"The {self.name!r} parameter of {owner} must be {_TYPES[self.type]}. Got {value!r} instead."
        )

    def parse(self, owner: str, text: str) -> Any:
        """Parse a command-line string for this parameter, then :meth:`check` it."""
        if self.nullable and text.strip().lower() in ("none", "null"):
            return None
        try:
            value: Any = _PARSERS[self.type](text.strip())
        except ValueError:
            raise ParameterError(
                f"The {self.name!r} parameter of {owner} must be {_TYPES[self.type]}. Got {text!r} instead."
            ) from None
        return self.check(owner, value)


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


_PARSERS = {int: int, float: float, str: str, bool: _parse_bool}


@dataclass(frozen=True)
class ParamSet:
    """Validated hyperparameter values of one plugin instance (read-only mapping)."""

    values: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)


def validate_params(owner: str, declared: Sequence[Param], given: Mapping[str, Any]) -> ParamSet:
    """Fill defaults and validate ``given`` against ``declared``; unknown names are an error."""
    by_name = {p.name: p for p in declared}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        known = ", ".join(sorted(by_name)) or "none"
        raise ParameterError(f"{owner} has no parameter {unknown[0]!r} (known parameters: {known}).")
    values = {p.name: p.check(owner, given.get(p.name, p.default)) for p in declared}
    return ParamSet(values)


def parse_param_strings(owner: str, declared: Sequence[Param], pairs: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings (from ``--method-arg``) against the declared parameters."""
    by_name = {p.name: p for p in declared}
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ParameterError(f"Expected key=value for a parameter of {owner}, got {pair!r}.")
        if key not in by_name:
            known = ", ".join(sorted(by_name)) or "none"
            raise ParameterError(f"{owner} has no parameter {key!r} (known parameters: {known}).")
        parsed[key] = by_name[key].parse(owner, text)
    return parsed
