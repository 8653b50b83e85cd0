"""What every estimator returns (``Estimate``, defined with the ``Estimator`` contract in core)."""

from __future__ import annotations

from densereward.core.components import Estimate
from densereward.core.returns import step_rewards_with_outcome, trajectory_scores

__all__ = ["Estimate", "step_rewards_with_outcome", "trajectory_scores"]
