"""Learned blending of an auxiliary heuristic reward with the primary reward (bi-level)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from densereward.core.components import Transform
from densereward.core.errors import ConfigError
from densereward.core.parameters import Positive, Real, Unit
from densereward.core.registry import register
from densereward.core.returns import step_rewards_with_outcome
from densereward.core.segments import discounted_reverse_cumsum
from densereward.core.trajectories import Trajectories


def alignment(primary_returns: torch.Tensor, auxiliary_returns: torch.Tensor) -> float | None:
    """Pearson correlation of two returns-to-go over a batch; None if either is constant."""
    p = primary_returns - primary_returns.mean()
    a = auxiliary_returns - auxiliary_returns.mean()
    denominator = torch.sqrt((p * p).sum() * (a * a).sum())
    if float(denominator) <= 1e-12:
        return None
    return float((p * a).sum() / denominator)


@register(
    "transform",
    "blend",
    paper="Behavior Alignment via Reward Function Optimization (Gupta et al. 2023)",
)
@dataclass
class Blend(Transform):
    """``r = r_primary + w * r_aux`` with ``w`` learned across iterations by a one-step bi-level rule.

    Outer objective: the primary return ``J_p``. After one policy-gradient step on the blended
    reward, ``theta' = theta + alpha (grad J_p + w grad J_aux)``, so
    ``dJ_p(theta') / dw ~ alpha <grad J_p, grad J_aux>``. With the score-function estimator and the
    usual approximation that scores of different steps are uncorrelated with similar norms, that
    inner product is proportional to ``E_t[G_p(t) G_aux(t)]`` for centred returns-to-go; we use
    its scale-free form, the correlation ``rho``, and step ``w <- clip(w + eta * rho, lo, hi)``.
    A heuristic that pulls against the primary return is switched off; one that agrees is kept.
    While the primary return has no variance in the batch (no success yet), ``w`` does not move.
    """

    auxiliary: str = "heuristic"
    primary: str = "reward"
    target: str = "reward"
    initial: Real = 1.0
    learning_rate: Positive = 0.5
    gamma: Unit = 0.99
    minimum: Real = 0.0
    maximum: Real = 2.0
    weight: float | None = field(default=None, init=False, repr=False)
    history: list[float] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.minimum > self.maximum:
            raise ConfigError(
                "maximum", f"must be at least minimum ({self.minimum:g}), got {self.maximum:g}"
            )
        if not self.minimum <= self.initial <= self.maximum:
            raise ConfigError(
                "initial",
                f"must lie in [minimum, maximum] = [{self.minimum:g}, {self.maximum:g}], "
                f"got {self.initial:g}",
            )

    def __call__(self, batch: Trajectories, iteration: int = 0) -> Trajectories:
        if self.weight is None:
            self.weight = self.initial
        primary = step_rewards_with_outcome(batch, self.primary)
        auxiliary = batch.step(self.auxiliary).to(primary.dtype)
        rho = alignment(
            discounted_reverse_cumsum(primary, batch.segments, self.gamma),
            discounted_reverse_cumsum(auxiliary, batch.segments, self.gamma),
        )
        if rho is not None:
            self.weight = min(
                max(self.weight + self.learning_rate * rho, self.minimum), self.maximum
            )
        self.history.append(self.weight)
        blended = batch.step(self.primary).to(primary.dtype) + self.weight * auxiliary
        return batch.with_steps(**{self.target: blended})
