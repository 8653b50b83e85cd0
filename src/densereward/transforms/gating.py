"""Gated reward accumulation (G-RA)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from densereward.core.components import Transform
from densereward.core.parameters import Real
from densereward.core.registry import register
from densereward.core.segments import broadcast, segment_sum
from densereward.core.trajectories import Trajectories
from densereward.transforms.base import read_column


def gate_rewards(low: Tensor, high: Tensor, threshold: float, batch: Trajectories) -> Tensor:
    """G-RA (Sun et al., 2025, "Stabilizing Long-term Multi-turn RL with Gated Rewards"):
    ``R = r_high + 1[r_high >= tau] * sum_t r_low,t``.

    Here the low-level step rewards are kept where the trajectory's high-level reward reaches the
    threshold and zeroed elsewhere (``high`` is per trajectory). Applying the transform once per
    level, from the highest priority down, gives the level-by-level gating.

    >>> import torch
    >>> batch = Trajectories.from_episodes({"r": [[1.0, 1.0], [1.0]]})
    >>> gate_rewards(batch.step("r"), torch.tensor([1.0, 0.0]), 0.5, batch).tolist()
    [1.0, 1.0, 0.0]
    """
    open_gate = broadcast(high >= threshold, batch.segments)
    return low * open_gate.to(low.dtype)


@register(
    "transform", "gate", paper="Stabilizing Long-term Multi-turn RL with Gated Rewards (G-RA)"
)
@dataclass(frozen=True)
class Gate(Transform):
    """Keep a low-priority step reward only where the high-priority reward reaches a threshold."""

    source: str = "reward"
    gate: str = "verdict"
    """A per-trajectory column, or a step column (then its per-trajectory sum is compared); by
    default the grader's verdict, which no transform moves (``outcome`` is a reward that
    ``combine`` or redistribution may already have zeroed)."""
    threshold: Real = 1.0
    target: str | None = None

    def __call__(self, batch: Trajectories, iteration: int = 0) -> Trajectories:
        high, per_step = read_column(batch, self.gate)
        if per_step:
            high = segment_sum(high, batch.segments)
        gated = gate_rewards(batch.step(self.source), high, self.threshold, batch)
        return batch.with_steps(**{self.target or self.source: gated})
