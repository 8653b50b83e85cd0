"""IGPO: discounted turn returns of information-gain rewards, z-scored within the group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from densereward.core.components import Estimator
from densereward.core.parameters import Unit
from densereward.core.registry import register
from densereward.core.segments import discounted_reverse_cumsum, pooled_zscore
from densereward.core.trajectories import Trajectories
from densereward.estimators.base import Estimate


def estimate_igpo(
    batch: Trajectories,
    information_gain: str = "information_gain",
    gamma: float = 0.5,
    normalize: Literal["returns", "rewards"] = "returns",
    eps: float = 1e-6,
) -> Estimate:
    """IGPO (Wang et al., 2025, "Information Gain-based Policy Optimization").

    Turn reward ``r_t = IG_t = p_t - p_{t-1}`` for ``t < T`` (the ``information_gain`` column)
    and ``r_T = outcome`` at the last turn; ``G_t = sum_{s >= t} gamma^(s - t) r_s`` (gamma = 0.5 in
    the reference code); advantages are ``G_t`` z-scored over every turn of the group
    (``normalize="returns"``, the reading in our formula sheet). ``normalize="rewards"`` z-scores
    the turn rewards first and discounts those instead.

    >>> batch = Trajectories.from_episodes({"information_gain": [[0.2, 0.0], [0.1, 0.0]]},
    ...                                    {"outcome": [1.0, 0.0], "group": [0, 0]})
    >>> estimate_igpo(batch, gamma=1.0).returns.tolist()
    [1.2, 1.0, 0.1, 0.0]
    """
    gains = batch.step(information_gain)
    outcome = batch.outcome
    # The last turn's reward is the outcome, not an information gain: one write per trajectory.
    last = batch.segments.last
    rewards = gains.index_fill(0, last, 0.0)
    if outcome is not None:
        rewards.index_copy_(0, last, outcome.to(gains.dtype))
    returns = discounted_reverse_cumsum(rewards, batch.segments, gamma)
    if normalize == "returns":
        return Estimate(pooled_zscore(returns, batch.segments, batch.groups, eps), returns)
    normalized = pooled_zscore(rewards, batch.segments, batch.groups, eps)
    return Estimate(discounted_reverse_cumsum(normalized, batch.segments, gamma), returns)


@register(
    "estimator", "igpo", paper="Information Gain-based Policy Optimization (Wang et al. 2025)"
)
@dataclass(frozen=True)
class IGPO(Estimator):
    """Information-gain turn rewards with the outcome at the last turn, discounted, group z-scored."""

    information_gain: str = "information_gain"
    gamma: Unit = 0.5
    normalize: Literal["returns", "rewards"] = "returns"

    def __call__(self, batch: Trajectories) -> Estimate:
        return estimate_igpo(batch, self.information_gain, self.gamma, self.normalize)
