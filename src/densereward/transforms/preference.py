"""Bounded, centred transforms of a reward model's score: Preference As Reward, log-sigmoid."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from densereward.core.components import Transform
from densereward.core.parameters import Positive
from densereward.core.registry import register
from densereward.core.segments import broadcast
from densereward.core.trajectories import Trajectories
from densereward.transforms.base import read_column, write_column


def preference_as_reward(rewards: Tensor, references: Tensor, k: float = 1.0) -> Tensor:
    """PAR (Fu et al., 2025, "Reward Shaping to Mitigate Reward Hacking in RLHF"):
    ``r_RL = (1/M) sum_m sigmoid(k * (r(x, y) - r(x, y_ref^m)))``.

    ``references`` is ``[n]`` (one reference per row) or ``[n, M]``. The result lies in (0, 1):
    bounded, and centred on the reference policy's responses.

    >>> preference_as_reward(torch.tensor([0.0]), torch.tensor([[0.0, 0.0]])).tolist()
    [0.5]
    """
    if references.ndim == 1:
        references = references[:, None]
    return torch.sigmoid(k * (rewards[:, None] - references.to(rewards.dtype))).mean(1)


def log_sigmoid_centre(rewards: Tensor, reference: Tensor) -> Tensor:
    """``u = log sigmoid(r - r_ref(x))`` (Wang et al., 2024, "Transforming and Combining Rewards").

    Concave and bounded above by 0: it pays most for lifting poor outputs above the reference and
    little for pushing good ones further, and a sum of such terms is the log-probability that the
    output is good in every property (a logical AND).

    >>> log_sigmoid_centre(torch.tensor([0.0]), torch.tensor([0.0])).tolist()
    [-0.6931471824645996]
    """
    return torch.nn.functional.logsigmoid(rewards - reference.to(rewards.dtype))


def _reference_for(batch: Trajectories, name: str, per_step: bool) -> Tensor:
    reference, reference_per_step = read_column(batch, name)
    if per_step and not reference_per_step:
        return broadcast(reference, batch.segments)
    return reference


@register("transform", "par", paper="Reward Shaping to Mitigate Reward Hacking in RLHF (PAR)")
@dataclass(frozen=True)
class PreferenceAsReward(Transform):
    """Mean sigmoid of the score's margin over reference responses' scores."""

    source: str = "outcome"
    reference: str = "reference_rewards"
    k: Positive = 1.0
    target: str | None = None

    def __call__(self, batch: Trajectories, iteration: int = 0) -> Trajectories:
        rewards, per_step = read_column(batch, self.source)
        shaped = preference_as_reward(
            rewards, _reference_for(batch, self.reference, per_step), self.k
        )
        return write_column(batch, self.target or self.source, shaped, per_step)


@register("transform", "log_sigmoid", paper="Transforming and Combining Rewards for Aligning LLMs")
@dataclass(frozen=True)
class LogSigmoidCentre(Transform):
    """log sigmoid(r - r_ref): centred on a reference score, bounded above by 0."""

    source: str = "outcome"
    reference: str = "reference_reward"
    target: str | None = None

    def __call__(self, batch: Trajectories, iteration: int = 0) -> Trajectories:
        rewards, per_step = read_column(batch, self.source)
        shaped = log_sigmoid_centre(rewards, _reference_for(batch, self.reference, per_step))
        return write_column(batch, self.target or self.source, shaped, per_step)
