"""Group and batch normalisation of a reward column."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from densereward.core.components import Transform
from densereward.core.parameters import Positive
from densereward.core.registry import register
from densereward.core.segments import Groups, pooled_zscore
from densereward.core.trajectories import Trajectories
from densereward.transforms.base import read_column, write_column


def normalize_column(
    batch: Trajectories, name: str, scope: Literal["group", "batch"], eps: float = 1e-6
) -> tuple[torch.Tensor, bool]:
    """``(x - mean) / (std + eps)`` over the trajectory's group or the whole batch.

    A step column pools every step of the group's trajectories; a per-trajectory column pools the
    group's trajectories. Constant pools map to exactly 0.
    """
    values, per_step = read_column(batch, name)
    pools = batch.groups if scope == "group" else Groups.one(len(batch), values.device)
    if per_step:
        return pooled_zscore(values, batch.segments, pools, eps), per_step
    return pools.zscore(values, eps), per_step


@register("transform", "normalize", paper="group / batch reward normalisation")
@dataclass(frozen=True)
class Normalize(Transform):
    """Z-score a column within each group or over the whole batch."""

    source: str = "reward"
    scope: Literal["group", "batch"] = "group"
    eps: Positive = 1e-6
    target: str | None = None

    def __call__(self, batch: Trajectories, iteration: int = 0) -> Trajectories:
        values, per_step = normalize_column(batch, self.source, self.scope, self.eps)
        return write_column(batch, self.target or self.source, values, per_step)
