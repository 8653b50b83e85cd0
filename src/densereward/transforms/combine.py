"""Weighted combination of reward columns into one step reward."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from densereward.core.components import Transform
from densereward.core.errors import ConfigError
from densereward.core.parameters import Real
from densereward.core.registry import register
from densereward.core.trajectories import OUTCOME, Trajectories
from densereward.transforms.base import read_column


@register("transform", "combine", paper="weighted sum of reward components")
@dataclass(frozen=True)
class Combine(Transform):
    """``target_t = sum_k w_k * column_k,t``; a per-trajectory column enters at the last step.

    Naming ``outcome`` among the weights moves the outcome into the step rewards (it is then zeroed
    so estimators do not count it twice).
    """

    weights: dict[str, Real]
    target: str = "reward"

    def __post_init__(self) -> None:
        if not self.weights:
            raise ConfigError("weights", "name at least one column to combine")

    def __call__(self, batch: Trajectories, iteration: int = 0) -> Trajectories:
        total: torch.Tensor | None = None
        for name, weight in self.weights.items():
            values, per_step = read_column(batch, name)
            if not per_step:
                spread = torch.zeros(batch.num_steps, dtype=values.dtype, device=values.device)
                values = spread.index_copy_(0, batch.segments.last, values)
            term = weight * values
            total = term if total is None else total + term.to(total.dtype)
        assert total is not None
        out = batch.with_steps(**{self.target: total})
        if OUTCOME in self.weights and batch.outcome is not None:
            out = out.with_episodes(**{OUTCOME: torch.zeros_like(batch.outcome)})
        return out
