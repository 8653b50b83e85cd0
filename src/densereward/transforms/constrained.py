"""Constrained combination: maximise one reward, each other kept under its threshold (dual ascent)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from densereward.core.components import Transform
from densereward.core.errors import ConfigError
from densereward.core.parameters import NonNegative, Positive, Real
from densereward.core.registry import register
from densereward.core.segments import Segments, segment_sum
from densereward.core.trajectories import OUTCOME, Trajectories
from densereward.transforms.base import read_column


def dual_ascent(
    multipliers: Tensor,
    values: Tensor,
    thresholds: Tensor,
    learning_rate: float,
    maximum: float | None = None,
) -> Tensor:
    """One projected gradient step on the dual of ``max J_0 s.t. J_k <= tau_k``:
    ``lambda_k <- clip(lambda_k + eta * (J_k - tau_k), 0, maximum)``.

    ``dL/dlambda_k = -(J_k - tau_k)`` for the Lagrangian ``L = J_0 - sum_k lambda_k (J_k - tau_k)``,
    so descending on the dual raises a multiplier while its constraint is violated and lowers it
    (to exactly 0, never below) while it is slack.

    >>> dual_ascent(torch.tensor([0.0, 0.3]), torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0]),
    ...             0.5).tolist()
    [0.5, 0.0]
    """
    stepped = multipliers + learning_rate * (values - thresholds)
    return stepped.clamp(min=0.0, max=maximum)


def lagrangian_rewards(
    objective: Tensor,
    constraints: Tensor,
    multipliers: Tensor,
    thresholds: Tensor,
    segments: Segments,
) -> Tensor:
    """Step rewards of the Lagrangian (Moskovitz et al., 2023, "Confronting Reward Model
    Overoptimization with Constrained RLHF"), ``[num_steps]``:

        r_t = r_{0,t} - sum_k lambda_k r_{k,t} + 1[t = T] sum_k lambda_k tau_k

    so each trajectory's return is ``R_0 - sum_k lambda_k (R_k - tau_k)`` (the thresholds enter
    once per trajectory, at its last step). ``objective`` is ``[num_steps]``, ``constraints``
    ``[K, num_steps]``, ``multipliers`` and ``thresholds`` ``[K]``.

    >>> segments = Segments(torch.tensor([0, 2]))
    >>> lagrangian_rewards(torch.tensor([1.0, 1.0]), torch.tensor([[0.5, 1.5]]),
    ...                    torch.tensor([2.0]), torch.tensor([1.0]), segments).tolist()
    [0.0, 0.0]
    """
    combined = objective - (multipliers.to(constraints.dtype) @ constraints).to(objective.dtype)
    offset = (multipliers * thresholds).sum().to(objective.dtype)
    return combined.index_add(0, segments.last, offset.expand(segments.last.shape[0]).contiguous())


def _spread(batch: Trajectories, name: str) -> Tensor:
    """A column as step rewards: a per-trajectory one enters at the last step."""
    values, per_step = read_column(batch, name)
    if per_step:
        return values
    spread = torch.zeros(batch.num_steps, dtype=values.dtype, device=values.device)
    return spread.index_copy_(0, batch.segments.last, values)


@register(
    "transform",
    "constrained",
    paper="Confronting Reward Model Overoptimization with Constrained RLHF (Moskovitz et al. 2023)",
)
@dataclass
class Constrained(Transform):
    """``target = objective - sum_k lambda_k (constraint_k - tau_k)`` with Lagrange multipliers
    ``lambda_k >= 0`` learned by dual ascent across iterations.

    Each component reward model is useful only up to a point (past it, more proxy reward means
    worse gold reward): the constraint ``J_k <= tau_k`` keeps component ``k`` under its threshold
    of usefulness, ``J_k`` being the batch mean of its per-trajectory return. Each new
    ``iteration`` takes one dual step from the previous multipliers with this batch's ``J_k``
    (update, then combine, as Lagrangian PPO does); a second call at the same iteration steps
    from the same multipliers again, so re-running a batch never moves them twice. The
    multipliers are written to the per-trajectory columns ``multiplier_<name>`` (the pipeline's
    diagnostics show them) and kept in ``multipliers`` and ``history``.
    """

    constraints: dict[str, Real]
    """each constrained column and its threshold ``tau_k``"""
    objective: str = "reward"
    """the column to maximise"""
    learning_rate: Positive = 0.1
    """the dual step size ``eta``"""
    initial: NonNegative = 0.0
    """every multiplier's value before the first iteration"""
    maximum: NonNegative | None = None
    """an upper bound on each multiplier (none: unbounded)"""
    target: str = "reward"
    log: bool = True
    """write ``multiplier_<name>`` columns"""
    multipliers: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    """the current ``lambda_k``"""
    history: list[dict[str, float]] = field(default_factory=list, init=False, repr=False)
    """the multipliers after each iteration"""
    _iteration: int | None = field(default=None, init=False, repr=False)
    _start: dict[str, float] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.constraints:
            raise ConfigError("constraints", "name at least one column to constrain")
        if self.objective in self.constraints:
            raise ConfigError(
                "constraints", f"the objective {self.objective!r} cannot also be a constraint"
            )
        if self.maximum is not None and self.initial > self.maximum:
            raise ConfigError(
                "initial", f"must be at most maximum ({self.maximum:g}), got {self.initial:g}"
            )

    def __call__(self, batch: Trajectories, iteration: int = 0) -> Trajectories:
        names = list(self.constraints)
        objective = _spread(batch, self.objective)
        steps = torch.stack([_spread(batch, name).to(objective.dtype) for name in names])
        if iteration != self._iteration:
            self._start = {name: self.multipliers.get(name, self.initial) for name in names}
        start = torch.tensor([self._start[name] for name in names], dtype=torch.float64)
        thresholds = torch.tensor([self.constraints[name] for name in names], dtype=torch.float64)
        values = torch.stack([segment_sum(row, batch.segments) for row in steps]).mean(1)
        updated = dual_ascent(
            start, values.to(torch.float64).cpu(), thresholds, self.learning_rate, self.maximum
        )
        self.multipliers = dict(zip(names, updated.tolist(), strict=True))
        if iteration == self._iteration and self.history:
            self.history[-1] = dict(self.multipliers)
        else:
            self.history.append(dict(self.multipliers))
        self._iteration = iteration

        device = objective.device
        combined = lagrangian_rewards(
            objective,
            steps,
            updated.to(device, objective.dtype),
            thresholds.to(device, objective.dtype),
            batch.segments,
        )
        out = batch.with_steps(**{self.target: combined})
        if OUTCOME in (self.objective, *names) and batch.outcome is not None:
            # the outcome now lives in the steps: estimators must not count it again
            out = out.with_episodes(**{OUTCOME: torch.zeros_like(batch.outcome)})
        if self.log:
            ones = torch.ones(len(batch), dtype=objective.dtype, device=device)
            out = out.with_episodes(
                **{f"multiplier_{name}": ones * self.multipliers[name] for name in names}
            )
        return out
