"""PROF: process rewards choose which responses GRPO trains on; they never enter the advantage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from densereward.core.components import Estimator
from densereward.core.parameters import Count, Real
from densereward.core.registry import register
from densereward.core.segments import Groups, broadcast, segment_mean
from densereward.core.trajectories import Trajectories
from densereward.estimators.base import Estimate, trajectory_scores


def prof_keep(
    batch: Trajectories, process: str = "prm", keep: int = 4, threshold: float = 0.5
) -> Tensor:
    """The responses the process-consistency filter keeps, ``[num_trajectories]`` bool.

    In each group of ``n`` responses, ``n+`` correct (``outcome > threshold``) and ``n-`` not,
    keep ``m = min(keep, n)``: the ``m+`` correct responses with the *highest* mean process
    reward ``v_i = (1/T_i) sum_t r_{i,t}`` and the ``m-`` incorrect ones with the *lowest*, where
    ``m+ = min(n+, max(m - n-, floor(m/2)))`` and ``m- = m - m+`` — as balanced as the group
    allows, removing from the larger side. This is PROF (Ye et al., 2025, "Beyond Correctness"):
    a correct response the PRM distrusts, or a wrong one it likes, is the one to drop; the exact
    split ``m+``/``m-`` is our reading of the paper's "balance the correct-incorrect ratio". Only
    the order of ``v`` within a group matters; ties keep the earlier response.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    groups = batch.groups
    value = segment_mean(batch.step(process).double(), batch.segments)
    correct = trajectory_scores(batch, None) > threshold
    size = groups.size
    positives = groups.sum(correct.long())
    kept = size.clamp(max=keep)
    kept_positive = torch.minimum(positives, torch.maximum(kept - (size - positives), kept // 2))
    quota = torch.where(correct, kept_positive[groups.index], (kept - kept_positive)[groups.index])
    # Rank inside each (group, correct) bucket, best first: correct by value descending,
    # incorrect ascending: stable sorts by value, then by bucket, give that order.
    bucket = groups.index * 2 + correct.long()
    order = torch.argsort(torch.where(correct, -value, value), stable=True)
    order = order[torch.argsort(bucket[order], stable=True)]
    counts = torch.bincount(bucket, minlength=2 * groups.count)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device) - starts[bucket[order]]
    return rank < quota


def estimate_prof(
    batch: Trajectories,
    process: str = "prm",
    keep: int = 4,
    reward: str | None = None,
    threshold: float = 0.5,
    eps: float = 1e-6,
) -> Estimate:
    """PROF-GRPO: :func:`prof_keep` chooses the responses, then GRPO on them alone.

    ``A_i = (R_i - mean_{K_g} R) / (std_{K_g} R + eps)`` for i in the kept set ``K_g`` of its
    group, ``R_i`` the outcome (plus the ``reward`` column's sum, as in GRPO); a dropped response
    gets no advantage and ``Estimate.keep`` false, so the trainer leaves its tokens out of the loss.
    The process reward only selects: no response can raise its own advantage by pleasing the PRM.

    >>> batch = Trajectories.from_episodes({"prm": [[0.9], [0.1], [0.8], [0.2]]},
    ...                                    {"outcome": [1.0, 1.0, 0.0, 0.0], "group": [0, 0, 0, 0]})
    >>> estimate = estimate_prof(batch, keep=2)
    >>> estimate.keep.tolist(), [round(a, 3) for a in estimate.advantages.tolist()]
    ([True, False, False, True], [0.707, 0.0, 0.0, -0.707])
    """
    kept = prof_keep(batch, process, keep, threshold)
    scores = trajectory_scores(batch, reward)
    groups = batch.groups
    advantages = torch.zeros_like(scores)
    advantages[kept] = Groups(groups.index[kept], groups.count).zscore(scores[kept], eps)
    return Estimate(
        broadcast(advantages, batch.segments), broadcast(scores, batch.segments), keep=kept
    )


@register(
    "estimator",
    "prof",
    paper="Beyond Correctness: process consistency filter, PROF (Ye et al. 2025)",
)
@dataclass(frozen=True)
class PROF(Estimator):
    """GRPO on the responses whose mean process reward agrees with their outcome."""

    process: str = "prm"
    keep: Count = 4
    """Responses kept per group (of ``group_size`` sampled)."""
    reward: str | None = None
    threshold: Real = 0.5
    selects_trajectories: ClassVar[bool] = True

    def __call__(self, batch: Trajectories) -> Estimate:
        return estimate_prof(batch, self.process, self.keep, self.reward, self.threshold)
