"""GRPO normalised per timestep: Flow-GRPO's and DenseGRPO's advantage for denoising steps."""

from __future__ import annotations

from dataclasses import dataclass

from densereward.core.components import Estimator
from densereward.core.parameters import NonNegative, Positive
from densereward.core.registry import register
from densereward.core.segments import Groups, discounted_reverse_cumsum
from densereward.core.trajectories import Trajectories
from densereward.estimators.base import Estimate
from densereward.estimators.group import estimate_grpo


def estimate_timestep_grpo(
    batch: Trajectories,
    process: str = "reward",
    outcome_weight: float = 0.0,
    eps: float = 1e-6,
) -> Estimate:
    """Step rewards z-scored within their group *at the same step index* (DenseGRPO, Deng et
    al. 2025; Flow-GRPO's per-timestep normalisation, Liu et al. 2025).

    ``A_{i,t} = (r_{i,t} - mean_{j ∈ g(i)} r_{j,t}) / (std_{j ∈ g(i)} r_{j,t} + eps)``: each step's
    own reward is its advantage, no return-to-go. DenseGRPO's ``r_{i,t} = ΔR_t`` is already the
    change of a predicted final reward across the step, which plays the role of
    ``Q(s_t, a_t) - V(s_t)``. Plus ``outcome_weight`` times the GRPO advantage of the outcome.

    Per-index statistics are unbiased here because every denoising trajectory has the same number
    of steps; for policies that choose their length, pool the group instead (``step_grpo``,
    verl#7244). A (group, index) cell of one trajectory, or with equal rewards, gets 0.
    Returns are the undiscounted return-to-go of ``r`` (value targets; GRPO trainers ignore them).

    >>> batch = Trajectories.from_episodes({"reward": [[1.0, 0.0], [0.0, 5.0]]}, {"group": [0, 0]})
    >>> [round(a, 3) for a in estimate_timestep_grpo(batch).advantages.tolist()]
    [0.707, -0.707, -0.707, 0.707]
    """
    rewards = batch.step(process)
    segments = batch.segments
    cell = batch.groups.index[segments.ids] * max(segments.max_length, 1) + segments.positions
    advantages = Groups.from_labels(cell).zscore(rewards, eps)
    returns = discounted_reverse_cumsum(rewards, segments, 1.0)
    if batch.outcome is not None and outcome_weight != 0.0:
        outcome = estimate_grpo(batch, reward=None, eps=eps)
        advantages = advantages + outcome_weight * outcome.advantages
        returns = returns + outcome.returns
    return Estimate(advantages, returns)


@register(
    "estimator",
    "timestep_grpo",
    paper="DenseGRPO (Deng et al. 2025); Flow-GRPO per-timestep normalisation (Liu et al. 2025)",
)
@dataclass(frozen=True)
class TimestepGRPO(Estimator):
    """Step rewards z-scored within their group at each step index; the step's own advantage."""

    process: str = "reward"
    outcome_weight: NonNegative = 0.0
    eps: Positive = 1e-6

    def __call__(self, batch: Trajectories) -> Estimate:
        return estimate_timestep_grpo(batch, self.process, self.outcome_weight, self.eps)
