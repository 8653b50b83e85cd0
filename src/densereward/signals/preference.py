"""Rewards from a reward model trained on preferences (``densereward train-rm``).

``reward_model``: the folder's ``K`` ensemble members score ``prompt + response`` as TRL asks a
reward model (right-padded, no special tokens); the trajectory's reward is
``r = mean_k s_k − κ · std_k s_k`` on its last step (Ctrl-U's uncertainty penalty; ``κ = 0`` and
``K = 1`` is a plain Bradley-Terry reward model), every other step 0. The members' spread is
written too, as the step column ``{name}_uncertainty`` (on the last step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from densereward.core.components import Signal, SignalContext
from densereward.core.errors import ValidationError
from densereward.core.parameters import NonNegative
from densereward.core.registry import register
from densereward.core.trajectories import Trajectories
from densereward.models.reward_model import load_reward_model, score_texts


@register("signal", "reward_model", paper="Bradley-Terry RM; Ctrl-U uncertainty penalty")
@dataclass(frozen=True)
class RewardModelSignal(Signal):
    """``mean − κ·std`` of a trained reward model's members on each whole response."""

    path: str
    """the reward model folder"""
    uncertainty_penalty: NonNegative = 0.0
    """``κ``"""

    def bind(self, context: SignalContext) -> BoundRewardModel:
        model, tokenizer = load_reward_model(self.path)
        return BoundRewardModel(model, tokenizer, self.uncertainty_penalty)


@dataclass(frozen=True)
class BoundRewardModel:
    model: Any
    tokenizer: Any
    penalty: float

    def __call__(self, batch: Trajectories, name: str) -> Trajectories:
        for field in ("prompt", "response"):
            if field not in batch.text:
                raise ValidationError(f"text.{field}", "the reward model reads prompt + response")
        texts = [p + r for p, r in zip(batch.text["prompt"], batch.text["response"], strict=True)]
        members = score_texts(self.model, self.tokenizer, texts)
        spread = members.std(1, unbiased=False)
        reward = members.mean(1) - self.penalty * spread
        last = batch.offsets[1:] - 1
        values = torch.zeros(batch.num_steps, dtype=torch.float64)
        uncertainty = torch.zeros(batch.num_steps, dtype=torch.float64)
        values[last] = reward
        uncertainty[last] = spread
        return batch.with_steps(**{name: values, f"{name}_uncertainty": uncertainty})
