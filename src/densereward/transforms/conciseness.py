"""Conciseness: a group-relative length penalty that only correct responses pay."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from densereward.core.components import Transform
from densereward.core.parameters import Positive, Real
from densereward.core.registry import register
from densereward.core.segments import Groups
from densereward.core.trajectories import Trajectories
from densereward.transforms.laser import (
    LengthUnit,
    add_trajectory_reward,
    correct_responses,
    response_lengths,
)


def conciseness_rewards(
    lengths: Tensor, correct: Tensor, groups: Groups, alpha: float, eps: float = 1e-6
) -> Tensor:
    """Length term of Arora & Zanette (2025, "Training Language Models to Reason Efficiently"):

        R(x, y) = 1[y correct] * (1 - alpha * sigmoid((L(y) - mean_c L) / (std_c L + eps)))

    with ``mean_c`` and ``std_c`` (population) over the *correct* responses of the same prompt.
    Returns the term added to the correctness reward, ``-alpha * 1[correct] * sigmoid(z)``,
    ``[num_trajectories]`` float64: the shorter a correct response is than its correct
    siblings, the less it pays (``alpha / 2`` at the mean); an incorrect response gets 0 at any
    length, so shortness never pays without correctness, and with ``alpha < 1`` every correct
    response still beats every incorrect one.

    >>> groups = Groups(torch.tensor([0, 0, 0]), 1)
    >>> lengths, correct = torch.tensor([10, 30, 5]), torch.tensor([True, True, False])
    >>> [round(x, 4) for x in conciseness_rewards(lengths, correct, groups, 0.2).tolist()]
    [-0.0538, -0.1462, 0.0]
    """
    length = lengths.to(torch.float64)
    right = correct.to(torch.float64)
    count = groups.sum(right).clamp(min=1)
    mean = groups.sum(length * right) / count
    spread = groups.sum(right * (length - mean[groups.index]) ** 2) / count
    z = (length - mean[groups.index]) / (spread.sqrt()[groups.index] + eps)
    return torch.where(correct, -alpha * torch.sigmoid(z), torch.zeros_like(z))


@register(
    "transform",
    "conciseness",
    paper="Training Language Models to Reason Efficiently (Arora & Zanette 2025)",
)
@dataclass(frozen=True)
class Conciseness(Transform):
    """``target -= alpha * 1[correct] * sigmoid(z)``, ``z`` the response's length z-scored
    among its group's correct responses."""

    alpha: Real = 0.2
    """the largest penalty a correct response can pay (keep below 1: right beats wrong)"""
    eps: Positive = 1e-6
    unit: LengthUnit = "tokens"
    """``tokens`` (from ``token_spans``) or ``steps``"""
    correct: str = "verdict"
    """the per-trajectory column that says whether a response is correct"""
    threshold: Real = 0.5
    """a response is correct when its ``correct`` column is at least this"""
    target: str = "outcome"
    """where the term is added: a per-trajectory column, or a step column (at the last step)"""

    def __call__(self, batch: Trajectories, iteration: int = 0) -> Trajectories:
        term = conciseness_rewards(
            response_lengths(batch, self.unit),
            correct_responses(batch, self.correct, self.threshold),
            batch.groups,
            self.alpha,
            self.eps,
        )
        return add_trajectory_reward(batch, self.target, term)
