"""LASER-D: LASER with budgets that adapt to each prompt's difficulty, recomputed every batch."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from densereward.core.components import Transform
from densereward.core.errors import ConfigError
from densereward.core.parameters import Positive, Real, Unit
from densereward.core.registry import register
from densereward.core.segments import Groups
from densereward.core.trajectories import Trajectories
from densereward.transforms.laser import (
    LASER_PAPER,
    LengthUnit,
    add_trajectory_reward,
    correct_responses,
    laser_rewards,
    response_lengths,
)


def difficulty_levels(correct: Tensor, groups: Groups, thresholds: Tensor) -> Tensor:
    """Each group's difficulty level from its accuracy ``acc_g``: level ``k`` when
    ``t_k < acc_g <= t_{k+1}`` (``t_0 = -inf``), so level 0 is the hardest. ``[num_groups]``.

    >>> groups = Groups(torch.tensor([0, 0, 1, 1, 2, 2]), 3)
    >>> correct = torch.tensor([False, False, True, False, True, True])
    >>> difficulty_levels(correct, groups, torch.tensor([1 / 3, 2 / 3])).tolist()
    [0, 1, 2]
    """
    accuracy = groups.sum(correct.to(torch.float64)) / groups.size.clamp(min=1)
    return torch.bucketize(accuracy, thresholds.to(accuracy.dtype))


def adaptive_budgets(
    lengths: Tensor,
    correct: Tensor,
    groups: Groups,
    thresholds: Tensor,
    expected_correct: float = 1.0,
    candidates: Tensor | None = None,
) -> Tensor:
    """LASER-D's target length per trajectory, ``[num_trajectories]`` float64.

    Per difficulty level ``d``, the *expected correct responses* within a length ``l`` is
    ``ECR_d(l) = K * P_{l,d}``, with ``P_{l,d}`` the fraction of level-``d`` responses that are
    correct and no longer than ``l`` and ``K`` the responses per prompt; the budget is the
    smallest candidate with ``ECR_d(l) >= e`` (``e = expected_correct``, 1 in the paper), so
    on average at least one correct response per prompt fits in it. Easy prompts (many short
    correct answers) get tight budgets, hard ones loose budgets.

    We count ``K * P`` as *correct responses within l per prompt of the level*, the same when
    every group has K responses and defined when they differ. ``count >= e * n_d`` holds exactly
    when ``l`` reaches the ``ceil(e * n_d)``-th shortest correct length of the level, so that
    order statistic is the budget without ``candidates`` (``inf`` — no limit — where the level
    has too few correct responses); with ``candidates`` (a grid, as in the paper) it is the
    smallest candidate at or above it, else the largest candidate. The paper recomputes the
    budgets every few steps on a monitoring set; here they are the current batch's.

    >>> groups = Groups(torch.tensor([0, 0, 0, 1, 1, 1]), 2)
    >>> lengths = torch.tensor([10, 20, 30, 50, 60, 70])
    >>> correct = torch.tensor([True, True, True, True, False, False])
    >>> adaptive_budgets(lengths, correct, groups, torch.tensor([0.5])).tolist()
    [10.0, 10.0, 10.0, 50.0, 50.0, 50.0]
    >>> adaptive_budgets(lengths, correct, groups, torch.tensor([0.5]), 2.0).tolist()
    [20.0, 20.0, 20.0, inf, inf, inf]
    """
    levels_of_groups = difficulty_levels(correct, groups, thresholds)
    count = thresholds.shape[0] + 1
    levels = levels_of_groups[groups.index]
    prompts = torch.bincount(levels_of_groups, minlength=count)
    needed = torch.ceil(expected_correct * prompts.to(torch.float64)).to(torch.int64)

    # sort the correct responses by (level, length): each level's lengths are then contiguous
    # and ascending, and the order statistic is one index into them
    right_lengths = lengths[correct].to(torch.float64)
    right_levels = levels[correct]
    order = torch.argsort(right_lengths, stable=True)
    order = order[torch.argsort(right_levels[order], stable=True)]
    ordered = torch.cat([right_lengths[order], right_lengths.new_tensor([math.inf])])
    have = torch.bincount(right_levels, minlength=count)
    starts = torch.cumsum(have, 0) - have
    reachable = (needed >= 1) & (needed <= have)
    pick = torch.where(reachable, starts + needed - 1, ordered.shape[0] - 1)
    budget = ordered[pick]
    if candidates is not None:
        grid = candidates.to(budget)
        index = torch.searchsorted(grid, budget).clamp(max=grid.shape[0] - 1)
        budget = grid[index]
    return budget[levels]


@register("transform", "laser_d", paper=LASER_PAPER)
@dataclass(frozen=True)
class LaserD(Transform):
    """LASER with a difficulty-aware budget per prompt (LASER-D); ``explore`` is LASER-DE."""

    alpha: Real = 0.5
    """the bonus a correct response within its budget earns"""
    thresholds: tuple[Unit, ...] = (1 / 3, 2 / 3)
    """group-accuracy cut points between difficulty levels (hard, medium, easy by default)"""
    expected_correct: Positive = 1.0
    """``e``: the budget is the shortest length with ``e`` expected correct responses per prompt"""
    budgets: tuple[Positive, ...] | None = None
    """candidate budgets (a grid, in ``unit``); none: the exact order statistic of the batch"""
    explore: bool = False
    """LASER-DE: an incorrect response longer than its budget earns ``alpha`` too (explore)"""
    unit: LengthUnit = "tokens"
    """``tokens`` (from ``token_spans``) or ``steps``"""
    correct: str = "verdict"
    """the per-trajectory column that says whether a response is correct"""
    threshold: Real = 0.5
    """a response is correct when its ``correct`` column is at least this"""
    target: str = "outcome"
    """where the bonus is added: a per-trajectory column, or a step column (at the last step)"""
    log: str | None = "length_budget"
    """a per-trajectory column to write each response's budget to (none: not written)"""

    def __post_init__(self) -> None:
        if list(self.thresholds) != sorted(self.thresholds):
            raise ConfigError("thresholds", f"must be increasing, got {list(self.thresholds)}")
        if self.budgets is not None and (
            not self.budgets or list(self.budgets) != sorted(self.budgets)
        ):
            raise ConfigError("budgets", f"must be a non-empty increasing list, got {self.budgets}")

    def __call__(self, batch: Trajectories, iteration: int = 0) -> Trajectories:
        lengths = response_lengths(batch, self.unit)
        correct = correct_responses(batch, self.correct, self.threshold)
        device = lengths.device
        budget = adaptive_budgets(
            lengths,
            correct,
            batch.groups,
            torch.tensor(self.thresholds, dtype=torch.float64, device=device),
            self.expected_correct,
            None
            if self.budgets is None
            else torch.tensor(self.budgets, dtype=torch.float64, device=device),
        )
        bonus = laser_rewards(lengths, correct, budget, self.alpha)
        if self.explore:
            # LASER-DE (our reading): a wrong answer that ran past its budget is encouraged to
            # keep exploring rather than pushed to stop early; a short wrong one earns nothing
            longer = ~correct & (lengths.to(torch.float64) > budget)
            bonus = bonus + longer.to(bonus.dtype) * self.alpha
        out = add_trajectory_reward(batch, self.target, bonus)
        if self.log is not None:
            # unlimited budgets are logged as the longest response of the batch (finite columns)
            shown = torch.minimum(budget, lengths.max().to(budget.dtype))
            out = out.with_episodes(**{self.log: shown})
        return out
