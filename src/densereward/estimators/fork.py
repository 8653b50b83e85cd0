"""Fork-relative advantages on rollout trees (PORTool; SLATE's truncated step-level sampling)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from densereward.core.registry import register
from densereward.core.segments import Groups
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
    advantage 0. Returns are ``V(v)``. Without a tree this is GRPO.

    >>> # Two trajectories share step 0, then fork: step 1 (R=1) and step 2 (R=0).
    >>> batch = Trajectories.from_episodes({"reward": [[0.0, 1.0], [0.0]]}, {"group": [0, 0]},
    ...                                    parent=[[-1, 0], [0]])
    >>> [round(a, 4) for a in estimate_fork_relative(batch, eps=0.0).advantages.tolist()]
    [0.0, 1.2071, -1.2071]
    """
    scores = trajectory_scores(batch, reward)
    if batch.parent is not None and reward is not None and reward in batch.steps:
        # Path scores: a trajectory's reward includes the rewards of the ancestors it shares.
        paths = tree_paths(batch)
        step_rewards = batch.step(reward)
        path_total = torch.zeros(len(batch), dtype=step_rewards.dtype, device=batch.device)
        path_total.index_add_(0, paths.segments.ids, step_rewards[paths.steps])
        scores = path_total + (
            batch.outcome.to(path_total.dtype) if batch.outcome is not None else 0.0
        )
    groups = batch.groups
    trajectory_advantage = groups.zscore(scores, eps)
    paths = tree_paths(batch)
    on_path = Groups(paths.steps, batch.num_steps)
    value = on_path.mean(scores[paths.segments.ids])
    mean_advantage = on_path.mean(trajectory_advantage[paths.segments.ids])
    parent = (
        batch.parent
        if batch.parent is not None
        else torch.where(
            batch.segments.positions == 0,
            -1,
            torch.arange(batch.num_steps, device=batch.device) - 1,
        )
    )
    root_group = groups.index[batch.segments.ids]
    sibling_key = torch.where(parent >= 0, parent, batch.num_steps + root_group)
    siblings = Groups.from_labels(sibling_key)
    fork_advantage = value - siblings.mean(value)[siblings.index]
    fork_advantage = fork_advantage.masked_fill(siblings.size[siblings.index] == 1, 0.0)
    return Estimate(mean_advantage + fork_weight * fork_advantage, value)


@register("estimator", "fork_relative", paper="PORTool: Tool-Use LLM Training with Rewarded Tree")
@dataclass(frozen=True)
class ForkRelative:
    """Shared steps get one value; siblings at each fork are compared with each other."""

    reward: str | None = "reward"
    fork_weight: float = 1.0

    def __call__(self, batch: Trajectories) -> Estimate:
        return estimate_fork_relative(batch, self.reward, self.fork_weight)
