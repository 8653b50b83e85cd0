"""The numeric parameter types components declare, so a recipe is checked when it loads.

A component field's annotation says what values make sense, with the ``annotated_types``
constraints (``Ge``, ``Gt``, ``Le``, ``Lt``, ``Interval``) that pydantic and others read too::

    gamma: Unit = 0.99            # a discount: [0, 1]
    eps: Positive = 1e-6          # (0, inf)
    horizon: Count = 100          # an integer >= 1
    scale: Real = 0.05            # any finite number (a negative scale is a penalty)

``core.registry.coerce`` enforces them, so ``densereward recipe`` rejects ``gamma: 1.5`` or
``horizon: 0`` with the usual one-line error, before any run starts. Every float is finite
whatever its annotation: NaN and infinity are never a parameter.
"""

from __future__ import annotations

from typing import Annotated, Any

from annotated_types import Ge, Gt, Interval, Le, Lt

from densereward.core.errors import ConfigError

Real = Annotated[float, Interval()]
"""Any finite number."""
Unit = Annotated[float, Interval(ge=0.0, le=1.0)]
"""A probability, a discount, a threshold on a score in [0, 1]."""
Positive = Annotated[float, Gt(0.0)]
NonNegative = Annotated[float, Ge(0.0)]
Count = Annotated[int, Ge(1)]
"""An integer that is at least 1: sizes, steps, epochs."""
NonNegativeCount = Annotated[int, Ge(0)]


def check_bounds(value: Any, constraints: tuple[Any, ...], path: str) -> None:
    """Raise a ``ConfigError`` at ``path`` when ``value`` breaks one of ``constraints``."""
    for operator, limit in _limits(constraints):
        if not _OPERATORS[operator](value, limit):
            raise ConfigError(path, f"must be {operator} {limit:g}, got {value!r}")


def describe(constraints: tuple[Any, ...]) -> str:
    """``' >= 0'``, ``' in [0, 1]'``: how ``densereward components`` shows a bound."""
    limits = dict(_limits(constraints))
    low = next(((op, limits[op]) for op in (">=", ">") if op in limits), None)
    high = next(((op, limits[op]) for op in ("<=", "<") if op in limits), None)
    if low and high:
        opening, closing = "[" if low[0] == ">=" else "(", "]" if high[0] == "<=" else ")"
        return f" in {opening}{low[1]:g}, {high[1]:g}{closing}"
    bound = low or high
    return f" {bound[0]} {bound[1]:g}" if bound else ""


_OPERATORS = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
}
_FIELDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _limits(constraints: tuple[Any, ...]) -> list[tuple[str, Any]]:
    """``(operator, limit)`` of every ``Ge``/``Gt``/``Le``/``Lt``/``Interval`` given."""
    out = []
    for constraint in constraints:
        if not isinstance(constraint, Interval | Ge | Gt | Le | Lt):
            continue
        for name, operator in _FIELDS.items():
            limit = getattr(constraint, name, None)
            if limit is not None:
                out.append((operator, limit))
    return out
