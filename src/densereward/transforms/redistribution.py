"""Redistribution: spread a trajectory's return over its steps so that the step rewards sum to it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from densereward.core.components import Transform
from densereward.core.errors import ConfigError
from densereward.core.parameters import NonNegative
from densereward.core.registry import register
from densereward.core.returns import trajectory_scores
from densereward.core.segments import broadcast, previous_in_segment, segment_sum
from densereward.core.trajectories import OUTCOME, Trajectories


def redistribute_return_decomposition(
    predictions: Tensor, returns: Tensor, batch: Trajectories, max_error: float | None = None
) -> Tensor:
    """Return decomposition (RUDDER, Arjona-Medina et al. 2019; SPA-RL).

    ``g_t = g(tau_{0:t})`` predicts the return after step t. Step rewards are the prediction
    differences ``r~_t = g_t - g_{t-1}`` (``g_{-1} = 0``) plus the correction ``G - g_T`` at the
    last step, so that ``sum_t r~_t = G`` exactly. Quality gate: a trajectory whose final
    prediction misses its return by more than ``max_error`` keeps the sparse reward (``G`` at the
    last step) — redistribution from a poor predictor would mislead more than it helps.

    >>> batch = Trajectories.from_episodes({"g": [[0.25, 0.5, 0.75]]})
    >>> redistribute_return_decomposition(batch.step("g"), torch.tensor([1.0]), batch).tolist()
    [0.25, 0.25, 0.5]
    """
    segments = batch.segments
    returns = returns.to(predictions.dtype)
    rewards = predictions - previous_in_segment(predictions, segments, 0.0)
    error = returns - predictions[segments.last]
    sparse = torch.zeros_like(rewards)
    sparse[segments.last] = returns
    rewards = rewards.index_add(0, segments.last, error)
    if max_error is not None:
        failed = error.abs() > max_error
        rewards = torch.where(broadcast(failed, segments), sparse, rewards)
    return rewards


def redistribute_weighted(weights: Tensor, returns: Tensor, batch: Trajectories) -> Tensor:
    """Importance-weighted redistribution: ``r~_t = G * w_t / sum_s w_s`` (uniform if all w are 0).

    ``w_t >= 0``; uniform redistribution is ``w_t = 1``.

    >>> batch = Trajectories.from_episodes({"w": [[1.0, 3.0]]})
    >>> redistribute_weighted(batch.step("w"), torch.tensor([2.0]), batch).tolist()
    [0.5, 1.5]
    """
    segments = batch.segments
    weights = weights.clamp(min=0.0)
    total = segment_sum(weights, segments)
    uniform = total <= 0
    weights = torch.where(broadcast(uniform, segments), torch.ones_like(weights), weights)
    total = torch.where(uniform, segments.lengths.to(weights.dtype), total)
    return broadcast(returns.to(weights.dtype) / total, segments) * weights


def _with_redistributed(
    batch: Trajectories, source: str, target: str | None, rewards: Tensor
) -> Trajectories:
    # The outcome now lives inside the step rewards; zero it so no estimator counts it twice.
    out = batch.with_steps(**{target or source: rewards})
    if batch.outcome is not None:
        out = out.with_episodes(**{OUTCOME: torch.zeros_like(batch.outcome)})
    return out


@register("transform", "return_decomposition", paper="RUDDER (Arjona-Medina et al. 2019); SPA-RL")
@dataclass(frozen=True)
class ReturnDecomposition(Transform):
    """Prediction differences of a return predictor, corrected to sum exactly to the return."""

    prediction: str = "prediction"
    source: str = "reward"
    target: str | None = None
    max_error: NonNegative | None = None

    def __call__(self, batch: Trajectories, iteration: int = 0) -> Trajectories:
        returns = trajectory_scores(batch, self.source)
        rewards = redistribute_return_decomposition(
            batch.step(self.prediction), returns, batch, self.max_error
        )
        return _with_redistributed(batch, self.source, self.target, rewards)


@register(
    "transform",
    "redistribute",
    paper="uniform / importance-weighted return redistribution (ReviBranch)",
)
@dataclass(frozen=True)
class Redistribute(Transform):
    """Spread the return over the steps uniformly or in proportion to a weight column."""

    weights: str | None = None
    source: str = "reward"
    target: str | None = None

    def __post_init__(self) -> None:
        if self.weights == "":
            raise ConfigError("weights", "give a column name, or leave it out for uniform")

    def __call__(self, batch: Trajectories, iteration: int = 0) -> Trajectories:
        returns = trajectory_scores(batch, self.source)
        weights = (
            batch.step(self.weights)
            if self.weights is not None
            else torch.ones(batch.num_steps, dtype=returns.dtype, device=batch.device)
        )
        return _with_redistributed(
            batch, self.source, self.target, redistribute_weighted(weights, returns, batch)
        )
