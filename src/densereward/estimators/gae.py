"""Generalized Advantage Estimation with terminated and truncated episodes kept apart."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from densereward.core.components import Estimator
from densereward.core.errors import ValidationError
from densereward.core.parameters import Unit
from densereward.core.registry import register
from densereward.core.segments import discounted_reverse_cumsum, next_in_segment
from densereward.core.trajectories import Trajectories
from densereward.estimators.base import Estimate, step_rewards_with_outcome


def estimate_gae(
    batch: Trajectories,
    reward: str = "reward",
    value: str = "value",
    bootstrap_value: str = "bootstrap_value",
    gamma: float = 0.99,
    lam: float = 0.95,
) -> Estimate:
    """GAE (Schulman et al., 2016, "High-Dimensional Continuous Control Using GAE").

    ``delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)`` and
    ``A_t = sum_{l >= 0} (gamma * lam)^l delta_{t+l}`` inside each trajectory; returns are
    ``A_t + V(s_t)``. At a trajectory's last step ``V(s_{t+1})`` is 0 if it *terminated* and the
    per-trajectory column ``bootstrap_value`` (the value of the true final observation) otherwise:
    a time-limit truncation, or a rollout cut by the end of the buffer, continues in expectation.

    Step columns: ``reward`` (plus ``outcome`` at the last step, if present) and ``value``.

    >>> batch = Trajectories.from_episodes(
    ...     {"reward": [[1.0, 1.0]], "value": [[0.0, 0.0]]},
    ...     {"terminated": [False], "truncated": [True], "bootstrap_value": [10.0]})
    >>> estimate_gae(batch, gamma=0.5, lam=1.0).advantages.tolist()
    [4.0, 6.0]
    """
    rewards = step_rewards_with_outcome(batch, reward)
    values = batch.step(value).to(rewards.dtype)
    terminated = batch.terminated
    if bool((~terminated).any()):
        if bootstrap_value not in batch.episodes:
            first = int(torch.nonzero(~terminated)[0, 0])
            raise ValidationError(
                bootstrap_value,
                "needed to bootstrap trajectories that did not terminate",
                trajectory=first,
            )
        final = torch.where(terminated, 0.0, batch.episodes[bootstrap_value].to(rewards.dtype))
    else:
        final = torch.zeros(len(batch), dtype=rewards.dtype, device=rewards.device)
    # delta_t = r_t + gamma * V(s_{t+1}) - V(s_t), built in place in the fresh next-value tensor.
    deltas = next_in_segment(values, batch.segments, final).mul_(gamma).add_(rewards).sub_(values)
    advantages = discounted_reverse_cumsum(deltas, batch.segments, gamma * lam)
    return Estimate(advantages, advantages + values)


@register("estimator", "gae", paper="High-Dimensional Continuous Control Using GAE (Schulman 2016)")
@dataclass(frozen=True)
class GAE(Estimator):
    """Generalized advantage estimation; bootstraps on truncation, not on termination."""

    gamma: Unit = 0.99
    lam: Unit = 0.95
    reward: str = "reward"
    value: str = "value"
    bootstrap_value: str = "bootstrap_value"

    def __call__(self, batch: Trajectories) -> Estimate:
        return estimate_gae(
            batch, self.reward, self.value, self.bootstrap_value, self.gamma, self.lam
        )
