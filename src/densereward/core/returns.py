"""The reward convention every estimator and transform shares.

The total reward of a trajectory is ``outcome + sum_t reward_t``, and the outcome arrives when the
trajectory ends (at its last step).
"""

from __future__ import annotations

import torch
from torch import Tensor

from densereward.core.segments import segment_sum
from densereward.core.trajectories import Trajectories


def step_rewards_with_outcome(batch: Trajectories, reward: str | None) -> Tensor:
    """Step rewards with the trajectory's ``outcome`` (if any) added at its last step.

    This is the one convention every estimator shares: the total reward of a trajectory is
    ``outcome + sum_t reward_t``, and the outcome arrives when the trajectory ends.
    """
    rewards = _step_column_or_zeros(batch, reward)
    if batch.outcome is None:
        return rewards
    rewards = rewards.clone()
    rewards.index_add_(0, batch.segments.last, batch.outcome.to(rewards.dtype))
    return rewards


def trajectory_scores(batch: Trajectories, reward: str | None) -> Tensor:
    """``outcome + sum_t reward_t`` per trajectory, ``[num_trajectories]``."""
    total = (
        segment_sum(batch.step(reward), batch.segments)
        if reward is not None and reward in batch.steps
        else None
    )
    outcome = batch.outcome
    if total is None and outcome is None:
        batch.step(reward or "reward")  # raises the "no such column" error
    if total is None:
        assert outcome is not None
        return outcome
    return total if outcome is None else total + outcome.to(total.dtype)


def _step_column_or_zeros(batch: Trajectories, name: str | None) -> Tensor:
    if name is not None and name in batch.steps:
        return batch.steps[name]
    if name is not None and batch.outcome is None:
        batch.step(name)  # nothing to estimate from: raise the "no such column" error
    dtype = batch.outcome.dtype if batch.outcome is not None else torch.float32
    return torch.zeros(batch.num_steps, dtype=dtype, device=batch.device)
