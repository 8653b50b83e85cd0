"""Thought-level aggregation (TP-GRPO, "Good Learners Think Their Thinking", 2025).

Step-level verdicts are noisy and step boundaries arbitrary; TP-GRPO judges each step correct or
incorrect and merges *contiguous* steps with the same verdict into one "thought". Every step of a
thought then carries the thought's reward, here the mean of the source scores over the thought
(``mode="mean"``) or its verdict as ``+1`` / ``-1`` (``mode="verdict"``). With verdicts
``v_k = 1[s_k ≥ τ]`` and thought ``T ∋ k`` (a maximal run of equal ``v`` inside one trajectory):

    r̃_k = (1/|T|) Σ_{j∈T} s_j        or        r̃_k = 2·v_k − 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from densereward.core.components import Transform
from densereward.core.errors import ConfigError
from densereward.core.parameters import Real
from densereward.core.registry import register
from densereward.core.segments import Segments, broadcast, segment_mean
from densereward.core.trajectories import Trajectories


def thought_segments(scores: Tensor, segments: Segments, threshold: float) -> Segments:
    """Maximal runs of steps with the same verdict ``scores ≥ threshold``, never crossing a
    trajectory boundary.

    >>> runs = thought_segments(torch.tensor([0.9, 0.8, 0.1, 0.7, 0.2]),
    ...                         Segments(torch.tensor([0, 4, 5])), 0.5)
    >>> runs.offsets.tolist()
    [0, 2, 3, 4, 5]
    """
    verdict = scores >= threshold
    changed = torch.ones_like(verdict)
    changed[1:] = verdict[1:] != verdict[:-1]
    changed[segments.offsets[:-1][segments.lengths > 0]] = True
    starts = torch.nonzero(changed).squeeze(1)
    return Segments(torch.cat([starts, torch.tensor([scores.shape[0]], device=starts.device)]))


def thought_rewards(
    scores: Tensor, segments: Segments, threshold: float = 0.5, mode: str = "mean"
) -> Tensor:
    """Every step gets its thought's reward (see the module docstring)."""
    runs = thought_segments(scores, segments, threshold)
    if mode == "verdict":
        return (scores >= threshold).to(scores.dtype) * 2 - 1
    return broadcast(segment_mean(scores, runs), runs)


@register("transform", "thought_level", paper="Good Learners Think Their Thinking (TP-GRPO)")
@dataclass(frozen=True)
class ThoughtLevel(Transform):
    """Contiguous steps with the same verdict share one reward."""

    source: str = "prm"
    threshold: Real = 0.5
    mode: Literal["mean", "verdict"] = "mean"
    target: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("mean", "verdict"):
            raise ConfigError("mode", "must be 'mean' or 'verdict'")

    def __call__(self, batch: Trajectories, iteration: int = 0) -> Trajectories:
        values = thought_rewards(batch.step(self.source), batch.segments, self.threshold, self.mode)
        return batch.with_steps(**{self.target or self.source: values})
