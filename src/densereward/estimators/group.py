"""Group-relative estimators for one scalar score per trajectory: GRPO, Dr.GRPO, RLOO."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from densereward.core.components import Estimator
from densereward.core.parameters import Positive
from densereward.core.registry import register
from densereward.core.segments import broadcast
from densereward.core.trajectories import Trajectories
from densereward.estimators.base import Estimate, trajectory_scores


def estimate_grpo(
    batch: Trajectories,
    reward: str | None = "reward",
    scale: Literal["std", "none"] = "std",
    eps: float = 1e-6,
    unbiased_std: bool = True,
) -> Estimate:
    """GRPO (Shao et al., 2024, DeepSeekMath) and Dr.GRPO (Liu et al., 2025).

    ``A_i = (R_i - mean_g R) / (std_g R + eps)`` with ``R_i = outcome_i + sum_t r_{i,t}`` and g
    the group of trajectory i (same prompt), broadcast to every step of i. ``scale="none"`` is
    Dr.GRPO's ``A_i = R_i - mean_g R`` (its other change, no per-length normalisation, lives in the
    loss: see :func:`policy_loss_weights`). A group of one, or whose scores are all equal, gets
    advantage exactly 0. Returns are ``R_i`` broadcast.

    >>> batch = Trajectories.from_episodes({"reward": [[0.0], [0.0, 0.0]]},
    ...                                    {"outcome": [1.0, 0.0], "group": [7, 7]})
    >>> estimate_grpo(batch, scale="none").advantages.tolist()
    [0.5, -0.5, -0.5]
    """
    scores = trajectory_scores(batch, reward)
    groups = batch.groups
    if scale == "std":
        per_trajectory = groups.zscore(scores, eps, unbiased_std)
    else:
        per_trajectory = (scores - groups.mean(scores)[groups.index]).masked_fill(
            groups.is_constant(scores), 0.0
        )
    return Estimate(broadcast(per_trajectory, batch.segments), broadcast(scores, batch.segments))


def estimate_rloo(batch: Trajectories, reward: str | None = "reward") -> Estimate:
    """RLOO (Ahmadian et al., 2024): ``A_i = R_i - mean_{j != i, j in g} R_j``, broadcast to steps.

    A trajectory alone in its group has no baseline and gets advantage 0.

    >>> batch = Trajectories.from_episodes({"reward": [[1.0], [2.0], [3.0]]}, {"group": [0, 0, 0]})
    >>> estimate_rloo(batch).advantages.tolist()
    [-1.5, 0.0, 1.5]
    """
    scores = trajectory_scores(batch, reward)
    advantages = scores - batch.groups.leave_one_out_mean(scores)
    return Estimate(broadcast(advantages, batch.segments), broadcast(scores, batch.segments))


def policy_loss_weights(
    batch: Trajectories,
    mode: Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"],
    max_length: int | None = None,
) -> Tensor:
    """Per-step weights ``w`` such that the policy loss is ``sum_t w_t * loss_t``.

    ``seq_mean_token_mean`` (GRPO): ``1 / (B * |o_i|)``; ``token_mean`` (DAPO): ``1 / sum_i |o_i|``;
    ``seq_mean_token_sum_norm`` (Dr.GRPO): ``1 / (B * L_max)``, which removes GRPO's length bias.
    The names match verl's ``loss_agg_mode``.
    """
    lengths = batch.lengths.to(torch.float32)
    count = float(len(batch))
    if mode == "token_mean":
        return torch.full((batch.num_steps,), 1.0 / float(lengths.sum()), device=batch.device)
    if mode == "seq_mean_token_mean":
        return broadcast(1.0 / (count * lengths), batch.segments)
    if mode == "seq_mean_token_sum_norm":
        longest = float(max_length if max_length is not None else batch.segments.max_length)
        return torch.full((batch.num_steps,), 1.0 / (count * longest), device=batch.device)
    raise ValueError(f"unknown loss aggregation mode {mode!r}")


@register("estimator", "grpo", paper="DeepSeekMath: GRPO (Shao et al. 2024)")
@dataclass(frozen=True)
class GRPO(Estimator):
    """Group-normalised trajectory score broadcast to every step."""

    reward: str | None = "reward"
    eps: Positive = 1e-6
    unbiased_std: bool = True

    def __call__(self, batch: Trajectories) -> Estimate:
        return estimate_grpo(batch, self.reward, "std", self.eps, self.unbiased_std)


@register(
    "estimator", "dr_grpo", paper="Understanding R1-Zero-Like Training: Dr. GRPO (Liu et al. 2025)"
)
@dataclass(frozen=True)
class DrGRPO(Estimator):
    """GRPO without the division by the group's standard deviation."""

    reward: str | None = "reward"

    def __call__(self, batch: Trajectories) -> Estimate:
        return estimate_grpo(batch, self.reward, "none")


@register(
    "estimator", "rloo", paper="Back to Basics: REINFORCE Leave-One-Out (Ahmadian et al. 2024)"
)
@dataclass(frozen=True)
class RLOO(Estimator):
    """Trajectory score minus the mean score of the other trajectories in its group."""

    reward: str | None = "reward"

    def __call__(self, batch: Trajectories) -> Estimate:
        return estimate_rloo(batch, self.reward)
