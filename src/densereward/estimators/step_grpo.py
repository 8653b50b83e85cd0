"""Step-level GRPO with process rewards, and the PRIME combination of process and outcome."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from densereward.core.components import Estimator
from densereward.core.parameters import NonNegative, Positive, Unit
from densereward.core.registry import register
from densereward.core.segments import (
    Groups,
    broadcast,
    discounted_reverse_cumsum,
    pooled_zscore,
    segment_mean,
)
from densereward.core.trajectories import Trajectories
from densereward.estimators.base import Estimate
from densereward.estimators.group import estimate_grpo


def estimate_step_grpo(
    batch: Trajectories,
    process: str = "reward",
    outcome_weight: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-6,
    scope: Literal["group", "batch"] = "group",
) -> Estimate:
    """Step-level GRPO with process rewards (process supervision in DeepSeekMath §4.1.3; OPRL).

    Process part: every step reward is z-scored against *all* step rewards of its group
    (``r~_{i,k} = (r_{i,k} - mean(R_g)) / (std(R_g) + eps)``, ``R_g`` the group's step rewards),
    then ``A^proc_{i,t} = sum_{k >= t} gamma^(k - t) r~_{i,k}``. Outcome part: the GRPO advantage
    of the outcome, broadcast. ``A = A^proc + outcome_weight * A^outcome``.

    The statistics are pooled over the group's steps, never per turn index: when the policy chooses
    how many turns to take, per-index statistics compare different subsets of trajectories at each
    index and bias the advantage (verl#7244).

    ``scope="batch"`` takes mean and std of the process rewards over every step of the batch
    instead (``R_g`` becomes the batch's step rewards, REINFORCE++'s global whitening; the
    outcome part stays per group). Within a group, a mistake every response makes is a constant
    and earns nothing; against the batch it sits below the mean and is pushed down. A policy with
    systematic errors makes exactly those mistakes (see docs/benchmarks.md, reasoning world).

    >>> batch = Trajectories.from_episodes({"reward": [[1.0, 1.0], [0.0]]}, {"group": [0, 0]})
    >>> [round(a, 3) for a in estimate_step_grpo(batch, outcome_weight=0.0).advantages.tolist()]
    [1.155, 0.577, -1.155]
    """
    rewards = batch.step(process)
    if scope not in ("group", "batch"):
        raise ValueError(f"scope must be 'group' or 'batch', got {scope!r}")
    pools = batch.groups if scope == "group" else Groups.one(len(batch), rewards.device)
    normalized = pooled_zscore(rewards, batch.segments, pools, eps)
    advantages = discounted_reverse_cumsum(normalized, batch.segments, gamma)
    returns = discounted_reverse_cumsum(rewards, batch.segments, gamma)
    if batch.outcome is not None and outcome_weight != 0.0:
        outcome = estimate_grpo(batch, reward=None, eps=eps)
        advantages = advantages + outcome_weight * outcome.advantages
        returns = returns + outcome.returns
    return Estimate(advantages, returns)


def estimate_prime(
    batch: Trajectories,
    process: str = "implicit_reward",
    gamma: float = 1.0,
    process_weight: float = 1.0,
    outcome_weight: float = 1.0,
) -> Estimate:
    """PRIME's advantage (Cui et al., 2025, "Process Reinforcement through Implicit Rewards").

    ``A_t^i = sum_{s >= t} gamma^(s - t) [r_phi(y_s^i) - mean_{j != i} r_phi(y^j)]
    + r_o(y^i) - mean_{j != i} r_o(y^j)`` — leave-one-out baselines for the process part
    (token rewards ``r_phi``, the ``process`` column) and the outcome part, computed separately
    and summed with the given weights. We read ``r_phi(y^j)`` as response j's *mean* token reward,
    as the reference implementation does, so that the baseline is on the scale of the token reward
    it is subtracted from. A response alone in its group has no baseline and gets advantage 0.

    >>> batch = Trajectories.from_episodes({"implicit_reward": [[1.0, 1.0], [0.0]]},
    ...                                    {"outcome": [1.0, 0.0], "group": [0, 0]})
    >>> estimate_prime(batch).advantages.tolist()
    [3.0, 2.0, -2.0]
    """
    rewards = batch.step(process)
    groups = batch.groups
    baseline = groups.leave_one_out_mean(segment_mean(rewards, batch.segments))
    centred = rewards - broadcast(baseline, batch.segments)
    # A response alone in its group has no leave-one-out baseline: it gets no advantage.
    alone = broadcast(groups.size[groups.index] == 1, batch.segments)
    centred = centred.masked_fill(alone, 0.0)
    advantages = process_weight * discounted_reverse_cumsum(centred, batch.segments, gamma)
    returns = discounted_reverse_cumsum(rewards, batch.segments, gamma)
    if batch.outcome is not None:
        outcome = batch.outcome.to(rewards.dtype)
        outcome_advantage = outcome - groups.leave_one_out_mean(outcome)
        advantages = advantages + outcome_weight * broadcast(outcome_advantage, batch.segments)
        returns = returns + broadcast(outcome, batch.segments)
    return Estimate(advantages, returns)


@register("estimator", "step_grpo", paper="DeepSeekMath process supervision; OPRL")
@dataclass(frozen=True)
class StepGRPO(Estimator):
    """Group- (or batch-) normalised process rewards, return-to-go over steps, plus the outcome GRPO
    advantage."""

    process: str = "reward"
    outcome_weight: NonNegative = 1.0
    gamma: Unit = 1.0
    eps: Positive = 1e-6
    scope: Literal["group", "batch"] = "group"

    def __call__(self, batch: Trajectories) -> Estimate:
        return estimate_step_grpo(
            batch, self.process, self.outcome_weight, self.gamma, self.eps, self.scope
        )


@register(
    "estimator", "prime", paper="Process Reinforcement through Implicit Rewards (Cui et al. 2025)"
)
@dataclass(frozen=True)
class PRIME(Estimator):
    """Leave-one-out process returns plus leave-one-out outcome advantage."""

    process: str = "implicit_reward"
    gamma: Unit = 1.0
    process_weight: NonNegative = 1.0
    outcome_weight: NonNegative = 1.0

    def __call__(self, batch: Trajectories) -> Estimate:
        return estimate_prime(
            batch, self.process, self.gamma, self.process_weight, self.outcome_weight
        )
