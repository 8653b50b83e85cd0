"""LASER: a step-function length reward for correct responses under a target budget."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from densereward.core.components import Transform
from densereward.core.errors import ValidationError
from densereward.core.parameters import Positive, Real
from densereward.core.registry import register
from densereward.core.trajectories import Trajectories

LengthUnit = Literal["tokens", "steps"]

LASER_PAPER = (
    "Learn to Reason Efficiently with Adaptive Length-based Reward Shaping (Liu et al. 2025)"
)


def response_lengths(batch: Trajectories, unit: LengthUnit) -> Tensor:
    """Length of each response, ``[num_trajectories]`` int64.

    ``steps``: its number of steps. ``tokens``: the end of its last step's token span, i.e. the
    response's tokens up to the end of its last step, gaps between spans included (a response's
    steps cover it from token 0; the answer after the last tag is itself a step).

    >>> batch = Trajectories.from_episodes({"r": [[0.0, 0.0], [0.0]]},
    ...                                    token_spans=[[[0, 3], [3, 7]], [[0, 2]]])
    >>> response_lengths(batch, "tokens").tolist(), response_lengths(batch, "steps").tolist()
    ([7, 2], [2, 1])
    """
    if unit == "steps":
        return batch.lengths
    if batch.token_spans is None:
        raise ValidationError(
            "token_spans", "lengths in tokens need the batch's token spans (or use unit: steps)"
        )
    return batch.token_spans[batch.segments.last, 1]


def correct_responses(batch: Trajectories, column: str, threshold: float) -> Tensor:
    """``column >= threshold`` per trajectory (bool): the responses that count as correct."""
    return batch.episode(column) >= threshold


def add_trajectory_reward(batch: Trajectories, target: str, bonus: Tensor) -> Trajectories:
    """Add a per-trajectory reward to ``target``: a step column gets it at the last step, a
    per-trajectory column (``outcome``) directly; a missing ``target`` is created per trajectory."""
    if target in batch.steps:
        values = batch.steps[target]
        added = values.clone().index_add_(0, batch.segments.last, bonus.to(values.dtype))
        return batch.with_steps(**{target: added})
    if target in batch.episodes:
        values = batch.episodes[target]
        return batch.with_episodes(**{target: values + bonus.to(values.dtype)})
    return batch.with_episodes(**{target: bonus})


def laser_rewards(lengths: Tensor, correct: Tensor, budget: Tensor | float, alpha: float) -> Tensor:
    """LASER's length reward (Liu et al., 2025): ``S(y) = alpha * 1[C(y) = 1] * 1[L(y) <= L_T]``.

    Added to the correctness reward, ``R(x, y) = C(y) + S(y)``: a correct response within the
    target length ``L_T`` earns ``1 + alpha``, a longer correct one ``1``, an incorrect one ``0``
    whatever its length, so being short never pays without being right. ``budget`` is a number or
    one ``L_T`` per trajectory (LASER-D). Returns ``[num_trajectories]`` float64.

    >>> laser_rewards(torch.tensor([3, 9, 2]), torch.tensor([True, True, False]), 5, 0.5).tolist()
    [0.5, 0.0, 0.0]
    """
    within = correct & (lengths.to(torch.float64) <= budget)
    return within.to(torch.float64) * alpha


@register("transform", "laser", paper=LASER_PAPER)
@dataclass(frozen=True)
class Laser(Transform):
    """``target += alpha * 1[correct] * 1[length <= budget]``: a bonus for correct responses
    within a fixed target length (LASER's step function)."""

    budget: Positive = 4096.0
    """the target length ``L_T``, in ``unit``"""
    alpha: Real = 0.5
    """the bonus a correct response within the budget earns"""
    unit: LengthUnit = "tokens"
    """``tokens`` (from ``token_spans``) or ``steps``"""
    correct: str = "verdict"
    """the per-trajectory column that says whether a response is correct"""
    threshold: Real = 0.5
    """a response is correct when its ``correct`` column is at least this"""
    target: str = "outcome"
    """where the bonus is added: a per-trajectory column, or a step column (at the last step)"""

    def __call__(self, batch: Trajectories, iteration: int = 0) -> Trajectories:
        bonus = laser_rewards(
            response_lengths(batch, self.unit),
            correct_responses(batch, self.correct, self.threshold),
            self.budget,
            self.alpha,
        )
        return add_trajectory_reward(batch, self.target, bonus)
