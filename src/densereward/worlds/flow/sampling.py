"""How the flow world samples a method's rollouts: signals that declare a sampling scheme.

A run recipe's methods differ only in their signals, transforms and estimator, so a method that
changes *how* trajectories are sampled says so with one of the signals below. They are a kind of
this package (``SamplingScheme``), and only ``FlowWorld.train`` asks for them
(``sampling_schemes``); as pipeline stages they only write a diagnostic column.

- ``branch_sampling`` (B²-DiffuRL, "Towards Better Alignment: Training Diffusion Models with
  Reinforcement Learning Against Sparse Rewards"): each group shares one SDE prefix up to a
  branch point and branches from there; only the steps after the branch point are trained, and
  the branch point moves backward over training (backward progressive training).
- ``noise_calibration`` (DenseGRPO, Deng et al. 2025, its reward-aware exploration calibration):
  a noise level per timestep, adjusted after each update from the signs of that timestep's dense
  rewards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from densereward.core.components import Signal
from densereward.core.parameters import Count, Positive, Unit
from densereward.core.registry import register
from densereward.core.segments import broadcast
from densereward.core.trajectories import Trajectories


class SamplingScheme(Signal):
    """A signal that also changes how the flow world samples the method's trajectories."""


def branch_point(update: int, updates: int, steps: int, stages: int) -> int:
    """B²-DiffuRL's backward progressive schedule: the grid index ``b`` the groups branch at.

    Training is split into ``stages`` equal stretches of updates; in stage ``s`` (0-based) the
    trained interval is the last ``L_s = ceil((s + 1) T / stages)`` denoising steps (those nearest
    the clean sample first, as the paper trains the final timesteps first), so ``b = T - L_s``;
    the last stage trains every step (``b = 0``).

    >>> [branch_point(u, 10, 10, 5) for u in range(10)]
    [8, 8, 6, 6, 4, 4, 2, 2, 0, 0]
    """
    stage = min(stages - 1, update * stages // max(updates, 1))
    return steps - math.ceil((stage + 1) * steps / stages)


@register(
    "signal",
    "branch_sampling",
    paper="B²-DiffuRL (Towards Better Alignment, 2025): branch sampling, backward progressive training",
)
@dataclass(frozen=True)
class BranchSampling(SamplingScheme):
    """Groups share an SDE prefix up to ``branch_point`` and branch after it; only the steps
    after it are trained. Writes the step column ``<name>``: 1 on trained steps, 0 on the prefix.

    Comparing the ``group_size`` branches of one shared state ``x_b`` isolates what the trained
    interval's policy contributes to the final reward: everything before ``b`` is common to the
    group, so a group-normalised outcome advantage (``grpo``) credits only the interval.
    """

    stages: Count = 5
    """stretches of training; the trained interval grows backward by ``T / stages`` steps each"""

    def branch_point(self, update: int, updates: int, steps: int) -> int:
        return branch_point(update, updates, steps, self.stages)

    def __call__(self, batch: Trajectories, name: str) -> Trajectories:
        branch = broadcast(batch.episode("branch_index"), batch.segments)
        return batch.with_steps(**{name: (batch.step("step_index") >= branch).double()})


def calibrate_noise(
    levels: Tensor,
    rewards: Tensor,
    step_index: Tensor,
    step: float,
    balance: float,
    lowest: float,
    highest: float,
) -> Tensor:
    """One round of reward-aware noise calibration (DenseGRPO, Deng et al. 2025).

    ``a_t`` is the SDE's noise level at timestep ``t``. With ``n⁺_t``/``n⁻_t`` the batch's
    positive/negative dense rewards ``ΔR_t`` at that timestep, an exploration space is suitable
    when it yields both better and worse steps in balance; so

    ``a_t ← clip(a_t + ε, lo, hi)`` if ``|n⁺_t − n⁻_t| / (n⁺_t + n⁻_t) ≤ τ``, else ``a_t − ε``

    (``ε = step``, ``τ = balance``): more noise where the steps still explore both ways, less where
    the noise mostly destroys (or nothing is learnt). Our reading of the scheme its abstract
    describes ("adaptively adjusting a timestep-specific stochasticity injection"); a timestep
    whose rewards are all 0 is left as it is.

    >>> levels = calibrate_noise(torch.tensor([0.7, 0.7]), torch.tensor([1.0, -1.0, -1.0, -2.0]),
    ...                          torch.tensor([0, 0, 1, 1]), 0.1, 0.2, 0.1, 2.0)
    >>> [round(a, 3) for a in levels.tolist()]  # step 0 balanced (+1, -1), step 1 all negative
    [0.8, 0.6]
    """
    steps = levels.shape[0]
    positive = torch.zeros(steps).index_add_(0, step_index, (rewards > 0).float())
    negative = torch.zeros(steps).index_add_(0, step_index, (rewards < 0).float())
    total = positive + negative
    imbalance = (positive - negative).abs() / total.clamp(min=1.0)
    moved = torch.where(imbalance <= balance, levels + step, levels - step)
    return torch.where(total > 0, moved, levels).clamp(lowest, highest)


@register(
    "signal",
    "noise_calibration",
    paper="DenseGRPO (Deng et al. 2025): reward-aware calibration of the exploration space",
)
@dataclass(frozen=True)
class NoiseCalibration(SamplingScheme):
    """A noise level per timestep (``calibrate_noise`` after every update, from the dense rewards
    in step column ``source``), starting from the trainer's ``noise_level``. As a pipeline stage
    it writes nothing: the noise level each step was sampled with is the step column
    ``noise_level`` of every flow batch."""

    source: str = "gain"
    """the step column of dense rewards (``ΔR_t``) the calibration reads"""
    step: Positive = 0.05
    """``ε``: how far one round moves a timestep's noise level"""
    balance: Unit = 0.5
    """``τ``: the largest ``|n⁺ − n⁻| / (n⁺ + n⁻)`` still counted as balanced"""
    lowest: Positive = 0.1
    """the smallest noise level a timestep may reach"""
    highest: Positive = 2.0
    """the largest noise level a timestep may reach"""

    def calibrate(self, levels: Tensor, batch: Trajectories) -> Tensor:
        return calibrate_noise(
            levels,
            batch.step(self.source).float(),
            batch.step("step_index"),
            self.step,
            self.balance,
            self.lowest,
            self.highest,
        )

    def __call__(self, batch: Trajectories, name: str) -> Trajectories:
        return batch


@dataclass(frozen=True)
class SamplingSchemes:
    """The sampling schemes a method's recipe declares (at most one of each)."""

    branch: BranchSampling | None = None
    calibration: NoiseCalibration | None = None


def sampling_schemes(signals: Mapping[str, Any]) -> SamplingSchemes:
    """The ``SamplingScheme`` signals among a recipe's built ``signals``."""
    branch = [s for s in signals.values() if isinstance(s, BranchSampling)]
    calibration = [s for s in signals.values() if isinstance(s, NoiseCalibration)]
    return SamplingSchemes(branch[0] if branch else None, calibration[0] if calibration else None)


__all__ = [
    "BranchSampling",
    "NoiseCalibration",
    "SamplingScheme",
    "SamplingSchemes",
    "branch_point",
    "calibrate_noise",
    "sampling_schemes",
]
