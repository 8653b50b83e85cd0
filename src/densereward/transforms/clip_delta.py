"""Clip and Delta: PRM step rewards whose return cannot be farmed by adding steps."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from densereward.core.components import Transform
from densereward.core.parameters import Real
from densereward.core.registry import register
from densereward.core.segments import Segments, next_in_segment
from densereward.core.trajectories import Trajectories


def clip_rewards(rewards: Tensor, eta: float = 0.0) -> Tensor:
    """Clip (Gao et al., 2024, "On Designing Effective RL Reward at Training Time"):
    ``r~_k = min(r_k - eta, 0)``. Good steps earn 0 and only bad steps are penalised, so every
    return is at most 0 and no trajectory gains by adding steps.

    >>> import torch
    >>> clip_rewards(torch.tensor([0.9, 0.2]), eta=0.5).tolist()
    [0.0, -0.30000001192092896]
    """
    return (rewards - eta).clamp(max=0.0)


def delta_rewards(rewards: Tensor, segments: Segments) -> Tensor:
    """Delta (same paper): ``r~_k = r_k - r_{k+1}`` for ``k < K`` and ``r~_K = r_K``.

    The return-to-go from step k telescopes to ``r_k``: ``sum_{j >= k} r~_j = r_k``, so the return
    of any trajectory is bounded by the largest single step reward however many steps it appends.

    >>> import torch
    >>> delta_rewards(torch.tensor([0.5, 0.75, 1.0]), Segments(torch.tensor([0, 3]))).tolist()
    [-0.25, -0.25, 1.0]
    """
    return rewards - next_in_segment(rewards, segments, 0.0)


@register(
    "transform", "clip", paper="On Designing Effective RL Reward at Training Time (Gao et al. 2024)"
)
@dataclass(frozen=True)
class Clip(Transform):
    """min(r - eta, 0): only steps below eta are penalised."""

    source: str = "reward"
    eta: Real = 0.0
    target: str | None = None

    def __call__(self, batch: Trajectories, iteration: int = 0) -> Trajectories:
        return batch.with_steps(
            **{self.target or self.source: clip_rewards(batch.step(self.source), self.eta)}
        )


@register(
    "transform",
    "delta",
    paper="On Designing Effective RL Reward at Training Time (Gao et al. 2024)",
)
@dataclass(frozen=True)
class Delta(Transform):
    """r_k - r_{k+1} (last step keeps r_K): return-to-go from step k equals r_k."""

    source: str = "reward"
    target: str | None = None

    def __call__(self, batch: Trajectories, iteration: int = 0) -> Trajectories:
        shaped = delta_rewards(batch.step(self.source), batch.segments)
        return batch.with_steps(**{self.target or self.source: shaped})


@register(
    "transform",
    "clip_delta",
    paper="On Designing Effective RL Reward at Training Time (Gao et al. 2024)",
)
@dataclass(frozen=True)
class ClipDelta(Transform):
    """Clip, then Delta."""

    source: str = "reward"
    eta: Real = 0.0
    target: str | None = None

    def __call__(self, batch: Trajectories, iteration: int = 0) -> Trajectories:
        clipped = clip_rewards(batch.step(self.source), self.eta)
        return batch.with_steps(
            **{self.target or self.source: delta_rewards(clipped, batch.segments)}
        )
