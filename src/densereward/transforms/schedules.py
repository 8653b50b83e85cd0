"""Annealing: weights that change with the training iteration."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from densereward.core.components import Transform
from densereward.core.errors import ConfigError
from densereward.core.parameters import Count, Real
from densereward.core.registry import register
from densereward.core.trajectories import Trajectories
from densereward.transforms.base import read_column, write_column

Schedule = Literal["constant", "linear", "cosine", "exponential"]


def anneal_weight(
    iteration: int, schedule: Schedule, start: float, end: float, horizon: int
) -> float:
    """Weight at ``iteration``: from ``start`` towards ``end`` over ``horizon`` iterations.

    ``linear`` and ``cosine`` reach ``end`` at ``horizon`` and stay there; ``exponential`` is
    ``end + (start - end) * exp(-iteration / horizon)`` (SophiaVL-R1's ``e^(-steps/T)`` annealing
    when ``end = 0``).

    >>> anneal_weight(5, "linear", 1.0, 0.0, 10), anneal_weight(20, "cosine", 1.0, 0.0, 10)
    (0.5, 0.0)
    """
    progress = min(max(iteration, 0) / horizon, 1.0)
    if schedule == "constant":
        return start
    if schedule == "linear":
        return start + (end - start) * progress
    if schedule == "cosine":
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "exponential":
        return end + (start - end) * math.exp(-max(iteration, 0) / horizon)
    raise ConfigError("schedule", f"unknown schedule {schedule!r}")


@register("transform", "anneal", paper="SophiaVL-R1 annealing; reward-weight schedules")
@dataclass(frozen=True)
class Anneal(Transform):
    """Multiply a column by a weight that follows a schedule over training iterations."""

    source: str = "reward"
    schedule: Schedule = "exponential"
    start: Real = 1.0
    end: Real = 0.0
    horizon: Count = 100
    target: str | None = None

    def __call__(self, batch: Trajectories, iteration: int = 0) -> Trajectories:
        values, per_step = read_column(batch, self.source)
        weight = anneal_weight(iteration, self.schedule, self.start, self.end, self.horizon)
        return write_column(batch, self.target or self.source, values * weight, per_step)
