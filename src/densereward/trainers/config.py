"""Checks the trainers' configs share."""

from __future__ import annotations

import math
from typing import Any

from densereward.core.errors import ConfigError


def check_rates(config: Any, positive: tuple[str, ...], non_negative: tuple[str, ...]) -> None:
    """Real-valued hyper-parameters that would only fail (or silently diverge) once training
    runs: finite, and positive or non-negative."""
    for name in (*positive, *non_negative):
        value = getattr(config, name)
        if not math.isfinite(value) or value < 0 or (value == 0 and name in positive):
            bound = "positive" if name in positive else "non-negative"
            raise ConfigError(name, f"must be a finite {bound} number, got {value}")
