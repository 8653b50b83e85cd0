"""VSRM: reward each step by how much it moves the answer's chance of being right."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from densereward.core.components import Transform
from densereward.core.parameters import Count, Real, Unit
from densereward.core.registry import register
from densereward.core.segments import (
    Segments,
    broadcast,
    discounted_reverse_cumsum,
    previous_in_segment,
)
from densereward.core.trajectories import Trajectories


def vsrm_rewards(
    probability: Tensor,
    initial: Tensor,
    segments: Segments,
    window: int = 1,
    gamma: float = 1.0,
) -> Tensor:
    """VSRM's step reward (Yue et al., 2025, "Promoting Efficient Reasoning with Verifiable
    Stepwise Reward"), ``[num_steps]``.

    ``p_k`` is the answer's chance of being right after step ``k`` (the accuracy of completions
    sampled from the prefix ending at step ``k``, a verifier's per-step correctness, or the
    probability of the reference answer), ``p_0`` that before the first step (``initial``, one per
    trajectory). A step's effect is ``d_k = p_k - p_{k-1}``: steps that move the answer toward
    the right one are rewarded, steps that move it away penalised, steps that change nothing
    (overthinking: re-checking, restating) earn 0. Because most ``d_k`` are 0, the paper carries
    later changes back to the steps before them with a decay; we do it over a look-ahead window
    of ``W`` steps (our form of that propagation):

        r_k = sum_{j = k}^{min(k + W - 1, K)} gamma^(j - k) d_j

    ``W = 1`` is the plain difference; with ``gamma = 1`` the sum telescopes to
    ``p_{min(k+W-1, K)} - p_{k-1}``, so a trajectory's total is bounded by ``W`` however many
    steps it adds. Computed as ``G_k - gamma^W G_{k+W}`` from one segmented discounted scan ``G``.

    >>> segments = Segments(torch.tensor([0, 3, 5]))
    >>> p = torch.tensor([0.5, 0.5, 1.0, 0.0, 0.25])
    >>> vsrm_rewards(p, torch.tensor([0.5, 0.5]), segments).tolist()
    [0.0, 0.0, 0.5, -0.5, 0.25]
    >>> vsrm_rewards(p, torch.tensor([0.5, 0.5]), segments, window=2).tolist()
    [0.0, 0.5, 0.5, -0.25, 0.25]
    """
    before = previous_in_segment(probability, segments)
    before = torch.where(
        segments.positions == 0, broadcast(initial.to(probability.dtype), segments), before
    )
    change = probability - before
    if window == 1:
        return change
    carried = discounted_reverse_cumsum(change, segments, gamma)
    ahead = torch.arange(segments.total, device=change.device) + window
    inside = segments.positions + window < segments.lengths[segments.ids]
    later = torch.where(inside, carried[ahead.clamp(max=max(segments.total - 1, 0))], 0.0)
    return carried - gamma**window * later


@register(
    "transform",
    "vsrm",
    paper="Promoting Efficient Reasoning with Verifiable Stepwise Reward (VSRM, Yue et al. 2025)",
)
@dataclass(frozen=True)
class VSRM(Transform):
    """``target_k += scale * r_k`` with ``r_k`` the (windowed) change ``p_k - p_{k-1}`` of a
    per-step answer-correctness column."""

    source: str = "answer_probability"
    """the step column ``p_k``: the chance the answer is right after step ``k``, in [0, 1]"""
    initial: Literal["group", "zero"] = "group"
    """``p_0``: ``group`` the group's accuracy (the chance from the bare prompt, estimated by
    its responses), or ``zero``"""
    correct: str = "verdict"
    """the per-trajectory correctness column the ``group`` estimate of ``p_0`` averages"""
    window: Count = 1
    """look-ahead ``W``: a step is credited with the changes of the next ``W`` steps"""
    gamma: Unit = 1.0
    """decay of the changes carried back inside the window"""
    scale: Real = 1.0
    target: str = "reward"
    """the step column the reward is added to (created if absent)"""

    def __call__(self, batch: Trajectories, iteration: int = 0) -> Trajectories:
        probability = batch.step(self.source)
        if self.initial == "group":
            correct = batch.episode(self.correct).to(probability.dtype)
            initial = batch.groups.mean(correct)[batch.groups.index]
        else:
            initial = probability.new_zeros(len(batch))
        shaped = self.scale * vsrm_rewards(
            probability, initial, batch.segments, self.window, self.gamma
        )
        if self.target in batch.steps:
            existing = batch.steps[self.target]
            shaped = existing + shaped.to(existing.dtype)
        return batch.with_steps(**{self.target: shaped})
