"""What every estimator returns."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from densereward.core.returns import step_rewards_with_outcome, trajectory_scores

__all__ = ["Estimate", "step_rewards_with_outcome", "trajectory_scores"]


@dataclass(frozen=True)
class Estimate:
    """Per-step advantages and returns (value targets), both ``[num_steps]``; ``keep``, from an
    estimator that selects trajectories (PROF), marks those the policy loss should see
    (``[num_trajectories]`` bool; ``None`` keeps all)."""

    advantages: Tensor
    returns: Tensor
    keep: Tensor | None = None
