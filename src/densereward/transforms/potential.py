"""Potential-based reward shaping (Ng, Harada & Russell, 1999)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from densereward.core.components import Transform
from densereward.core.errors import ValidationError
from densereward.core.parameters import Real, Unit
from densereward.core.registry import register
from densereward.core.segments import Segments, next_in_segment, previous_in_segment
from densereward.core.trajectories import Trajectories


def shape_potential(
    rewards: Tensor,
    potential: Tensor,
    segments: Segments,
    terminated: Tensor,
    final_potential: Tensor | None,
    gamma: float,
) -> Tensor:
    """``r'_t = r_t + gamma * Phi(s_{t+1}) - Phi(s_t)``, with ``Phi(s_{t+1}) = 0`` only on termination.

    ``potential[t] = Phi(s_t)``, the state in which step t was taken. At a trajectory's last step,
    ``s_{t+1}`` is terminal if the episode *terminated*, and ``Phi`` of a terminal state is 0.
    If it was *truncated* (a time limit, or the end of a rollout buffer), ``s_{t+1}`` is an ordinary
    state whose value is bootstrapped, so its potential is ``final_potential`` — zeroing it there
    (as code that zeroes on every ``done`` does) adds ``-Phi(s_t)`` at truncation and breaks the
    policy invariance. With this handling, for any ``Phi`` the shaped and original MDPs have the same
    optimal policies, and ``sum_t gamma^t r'_t = sum_t gamma^t r_t - Phi(s_0)`` on terminated
    episodes.

    >>> s = Segments(torch.tensor([0, 2]))
    >>> shape_potential(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0]), s,
    ...                 torch.tensor([True]), None, 1.0).tolist()
    [1.0, -1.0]
    """
    terminal = torch.zeros_like(terminated, dtype=potential.dtype)
    if final_potential is None:
        if not bool(terminated.all()):
            first = int(torch.nonzero(~terminated)[0, 0])
            raise ValidationError(
                "final_potential",
                "needed for trajectories that were truncated rather than terminated",
                trajectory=first,
            )
        last_potential = terminal
    else:
        last_potential = torch.where(terminated, terminal, final_potential.to(potential.dtype))
    following = next_in_segment(potential, segments, last_potential)
    return rewards + gamma * following - potential


@register(
    "transform",
    "potential",
    paper="Policy Invariance Under Reward Transformations (Ng et al. 1999)",
)
@dataclass(frozen=True)
class PotentialShaping(Transform):
    """Add gamma*Phi(s') - Phi(s); Phi(terminal) = 0 on termination only, never on truncation."""

    potential: str = "potential"
    source: str = "reward"
    target: str | None = None
    gamma: Unit = 0.99
    potential_at: Literal["state", "next_state"] = "state"
    """``state``: ``potential[t] = Phi(s_t)``. ``next_state``: ``potential[t] = Phi(s_{t+1})``, as
    a PRM scores the prefix that ends with step t; then ``Phi(s_0) = initial_potential``."""
    initial_potential: Real = 0.0
    final_potential: str = "final_potential"

    def __call__(self, batch: Trajectories, iteration: int = 0) -> Trajectories:
        rewards = batch.steps.get(self.source)
        potential = batch.step(self.potential)
        if rewards is None:
            rewards = torch.zeros_like(potential)
        final = batch.episodes.get(self.final_potential)
        if self.potential_at == "next_state":
            final = potential[batch.segments.last]
            potential = previous_in_segment(potential, batch.segments, self.initial_potential)
        shaped = shape_potential(
            rewards,
            potential.to(rewards.dtype),
            batch.segments,
            batch.terminated,
            final,
            self.gamma,
        )
        return batch.with_steps(**{self.target or self.source: shaped})
