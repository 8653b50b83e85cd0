"""What every estimator returns."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from densereward.core.returns import step_rewards_with_outcome, trajectory_scores

__all__ = ["Estimate", "step_rewards_with_outcome", "trajectory_scores"]


@dataclass(frozen=True)
class Estimate:
    """Per-step advantages and returns (value targets), both ``[num_steps]``."""

    advantages: Tensor
    returns: Tensor
