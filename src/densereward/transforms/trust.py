"""Trust weighting of a process/thinking reward by how well it separates right from wrong."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from densereward.core.components import Transform
from densereward.core.parameters import Real
from densereward.core.registry import register
from densereward.core.segments import Groups, broadcast, segment_mean
from densereward.core.trajectories import Trajectories
from densereward.transforms.base import read_column, write_column


def trust_weights(thinking: Tensor, correct: Tensor, groups: Groups) -> Tensor:
    """Trust-GRPO's per-group weight (Fan et al., 2025, SophiaVL-R1).

    With ``mu_c`` and ``mu_w`` the mean thinking reward of the group's correct and wrong responses,
    ``gamma_g = 1`` if ``mu_c >= mu_w`` (or the group lacks one of the two kinds), else
    ``exp(mu_c - mu_w)``: a thinking reward that prefers wrong answers is trusted less.
    Returns the weight of each trajectory's group, ``[num_trajectories]``.

    >>> groups = Groups(torch.tensor([0, 0, 1, 1]), 2)
    >>> trust_weights(torch.tensor([0.2, 0.8, 0.9, 0.1]),
    ...               torch.tensor([True, False, True, False]), groups).tolist()
    [0.5488116145133972, 0.5488116145133972, 1.0, 1.0]
    """
    right = correct.to(thinking.dtype)
    count_right = groups.sum(right)
    count_wrong = groups.sum(1.0 - right)
    mean_right = groups.sum(thinking * right) / count_right.clamp(min=1)
    mean_wrong = groups.sum(thinking * (1.0 - right)) / count_wrong.clamp(min=1)
    both = (count_right > 0) & (count_wrong > 0)
    weight = torch.where(both & (mean_right < mean_wrong), torch.exp(mean_right - mean_wrong), 1.0)
    return weight[groups.index]


@register("transform", "trust", paper="SophiaVL-R1: Trust-GRPO (Fan et al. 2025)")
@dataclass(frozen=True)
class TrustWeight(Transform):
    """Scale a thinking reward by exp(mu_correct - mu_wrong) in groups where it prefers wrong answers."""

    source: str = "thinking_reward"
    correct: str = "verdict"
    """The per-trajectory column that says whether a response is correct."""
    threshold: Real = 0.5
    """A response counts as correct when its ``correct`` column is at least this."""
    target: str | None = None

    def __call__(self, batch: Trajectories, iteration: int = 0) -> Trajectories:
        values, per_step = read_column(batch, self.source)
        per_trajectory = segment_mean(values, batch.segments) if per_step else values
        correct = batch.episode(self.correct) >= self.threshold
        weight = trust_weights(per_trajectory, correct, batch.groups)
        if per_step:
            weight = broadcast(weight, batch.segments)
        return write_column(
            batch, self.target or self.source, values * weight.to(values.dtype), per_step
        )
