"""Fork-relative advantages on rollout trees (PORTool; SLATE's truncated step-level sampling)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from densereward.core.components import Estimator
from densereward.core.parameters import NonNegative
from densereward.core.registry import register
from densereward.core.segments import Groups, broadcast, segment_sum
from densereward.core.trajectories import Trajectories
from densereward.core.trees import tree_paths
from densereward.estimators.base import Estimate, trajectory_scores


def estimate_fork_relative(
    batch: Trajectories,
    reward: str | None = "reward",
    fork_weight: float = 1.0,
    eps: float = 1e-6,
) -> Estimate:
    """Step advantages on a rollout tree: trajectory-relative plus fork-relative.

    Each stored step ``v`` is shared by every trajectory whose path passes through it; its value is
    ``V(v) = mean_{i through v} R_i`` (``R_i = outcome_i + sum_t r_{i,t}``), so a shared step gets
    one value. Siblings are the children of one parent step (for roots: the roots of one group).

    ``A(v) = mean_{i through v} A^traj_i + fork_weight * (V(v) - mean_{u in siblings(v)} V(u))``

    with ``A^traj_i`` the GRPO z-score of ``R_i`` in its group (PORTool blends fork-relative with
    trajectory-relative advantages this way). A step that is its parent's only child has fork
    advantage 0. Returns are ``V(v)``. Without a tree every trajectory forks at the prompt, so the
    first step of each gets ``R_i - mean_g R`` on top of the GRPO advantage and later steps get
    the GRPO advantage alone.

    >>> # Two trajectories share step 0, then fork: step 1 (R=1) and step 2 (R=0).
    >>> batch = Trajectories.from_episodes({"reward": [[0.0, 1.0], [0.0]]}, {"group": [0, 0]},
    ...                                    parent=[[-1, 0], [0]])
    >>> [round(a, 4) for a in estimate_fork_relative(batch, eps=0.0).advantages.tolist()]
    [0.0, 1.2071, -1.2071]
    """
    groups = batch.groups
    if batch.parent is None:
        # Only the prompt forks: the roots (first steps) of a group are the siblings.
        scores = trajectory_scores(batch, reward)
        trajectory_advantage = groups.zscore(scores, eps)
        centred = (scores - groups.mean(scores)[groups.index]).masked_fill(
            groups.size[groups.index] == 1, 0.0
        )
        advantages = broadcast(trajectory_advantage, batch.segments)
        # Only each trajectory's first step sits at the fork: one write per trajectory.
        advantages.index_add_(0, batch.offsets[:-1], centred, alpha=fork_weight)
        return Estimate(advantages, broadcast(scores, batch.segments))
    paths = tree_paths(batch)
    path_scores: Tensor | None = batch.outcome
    if reward is not None and reward in batch.steps:
        # A trajectory's reward includes the rewards of the ancestor steps it shares.
        step_rewards = batch.step(reward)
        path_total = segment_sum(step_rewards[paths.steps], paths.segments)
        path_scores = (
            path_total if path_scores is None else path_total + path_scores.to(path_total.dtype)
        )
    if path_scores is None:
        batch.step(reward or "reward")  # raises the "no such column" error
    assert path_scores is not None
    scores = path_scores
    trajectory_advantage = groups.zscore(scores, eps)
    on_path = Groups(paths.steps, batch.num_steps)
    value = on_path.mean(broadcast(scores, paths.segments))
    mean_advantage = on_path.mean(broadcast(trajectory_advantage, paths.segments))
    # Dense sibling keys without a sort: children of step p share key p; roots of group g share
    # key num_steps + g.
    root_group = broadcast(groups.index, batch.segments)
    parent = batch.parent
    siblings = Groups(
        torch.where(parent >= 0, parent, batch.num_steps + root_group),
        batch.num_steps + groups.count,
    )
    fork = value - siblings.mean(value)[siblings.index]
    fork = fork.masked_fill(siblings.size[siblings.index] == 1, 0.0)
    return Estimate(mean_advantage + fork_weight * fork, value)


@register("estimator", "fork_relative", paper="PORTool: Tool-Use LLM Training with Rewarded Tree")
@dataclass(frozen=True)
class ForkRelative(Estimator):
    """Shared steps get one value; siblings at each fork are compared with each other."""

    reward: str | None = "reward"
    fork_weight: NonNegative = 1.0

    def __call__(self, batch: Trajectories) -> Estimate:
        return estimate_fork_relative(batch, self.reward, self.fork_weight)
