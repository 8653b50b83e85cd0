"""Reading and writing the column a transform works on: a step column or a per-trajectory one."""

from __future__ import annotations

from torch import Tensor

from densereward.core.errors import ValidationError
from densereward.core.segments import broadcast
from densereward.core.trajectories import Trajectories


def read_column(batch: Trajectories, name: str) -> tuple[Tensor, bool]:
    """``(values, is_step_column)``; step columns win if a name is both."""
    if name in batch.steps:
        return batch.steps[name], True
    if name in batch.episodes:
        return batch.episodes[name], False
    have = ", ".join(sorted([*batch.steps, *batch.episodes])) or "none"
    raise ValidationError(name, f"no such column (have: {have})")


def write_column(batch: Trajectories, name: str, values: Tensor, per_step: bool) -> Trajectories:
    return batch.with_steps(**{name: values}) if per_step else batch.with_episodes(**{name: values})


def as_step_values(batch: Trajectories, name: str) -> Tensor:
    """A column as one value per step; a per-trajectory column is repeated over its steps."""
    values, per_step = read_column(batch, name)
    return values if per_step else broadcast(values, batch.segments)
