"""Dense signals for control: a learned progress potential and a count-based novelty bonus."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from densereward.core.components import Needs, Signal, SignalContext
from densereward.core.errors import ConfigError, ValidationError
from densereward.core.parameters import Count, Real
from densereward.core.registry import register
from densereward.core.trajectories import Trajectories
from densereward.models.progress import ProgressModel


@register(
    "signal",
    "progress_model",
    paper="Robo-Dopamine; Unsupervised Perceptual Rewards (Sermanet et al.)",
)
@dataclass(frozen=True)
class ProgressPotential(Signal):
    """Potential ``Phi(s) = scale * g(s)`` from a progress model fitted on demonstrations.

    Writes the step column ``<name>`` (``Phi(s_t)``) and the per-trajectory column
    ``final_<name>`` (``Phi`` of the observation after the last step, for trajectories that did
    not terminate), ready for the ``potential`` transform. Reads step column ``obs`` and
    per-trajectory column ``final_obs``.
    """

    demos: Count = 20
    scale: Real = 1.0
    fit_steps: Count = 400

    def needs(self) -> Needs:
        return Needs(demonstrations=True)

    def bind(self, context: SignalContext) -> FittedPotential:
        if context.demonstrations is None:
            raise ConfigError("signals.progress_model", "this world cannot provide demonstrations")
        episodes = context.demonstrations(self.demos)
        torch.manual_seed(context.seed)
        model = ProgressModel(tuple(episodes[0].shape[1:]))
        fit_error = model.fit(episodes, steps=self.fit_steps, seed=context.seed)
        return FittedPotential(model, self.scale, fit_error)


@dataclass(frozen=True)
class FittedPotential:
    """``ProgressPotential`` bound: the fitted progress model and its training error."""

    model: ProgressModel
    scale: float
    fit_error: float

    def __call__(self, batch: Trajectories, name: str) -> Trajectories:
        with torch.no_grad():
            potential = self.scale * self.model(batch.step("obs")).to(torch.float64)
            final = self.scale * self.model(batch.episode("final_obs")).to(torch.float64)
        return batch.with_steps(**{name: potential}).with_episodes(**{f"final_{name}": final})


@register(
    "signal",
    "count_bonus",
    paper="count-based exploration (Bellemare et al. 2016; Strehl & Littman 2008)",
)
@dataclass(frozen=True)
class CountBonus(Signal):
    """Novelty bonus ``scale / sqrt(N(s_t))`` with ``N`` the visits of the observation so far.

    Observations are hashed exactly (a random 64-bit projection of their bytes); counts persist
    across batches of one bound signal, so the bonus decays as the agent revisits states. Writes
    step column ``<name>`` from step column ``obs``.
    """

    scale: Real = 0.05

    def bind(self, context: SignalContext) -> VisitCounts:
        return VisitCounts(self.scale)


@dataclass
class VisitCounts:
    """``CountBonus`` bound: the visit count of every observation hash seen so far."""

    scale: float
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __call__(self, batch: Trajectories, name: str) -> Trajectories:
        obs = batch.step("obs").reshape(batch.num_steps, -1).numpy()
        if obs.dtype.kind not in "iub":
            raise ValidationError("steps.obs", "count bonus needs discrete observations (integers)")
        projection = np.random.default_rng(12345).integers(
            1, 2**62, size=obs.shape[1], dtype=np.int64
        )
        with np.errstate(over="ignore"):
            hashes = obs.astype(np.int64) @ projection
        batch_keys, inverse, batch_counts = np.unique(
            hashes, return_inverse=True, return_counts=True
        )
        merged = np.union1d(self.keys, batch_keys)
        counts = np.zeros(merged.shape[0], dtype=np.int64)
        counts[np.searchsorted(merged, self.keys)] += self.counts
        counts[np.searchsorted(merged, batch_keys)] += batch_counts
        self.keys, self.counts = merged, counts
        visits = counts[np.searchsorted(merged, batch_keys)][inverse]
        bonus = self.scale / np.sqrt(visits.astype(np.float64))
        return batch.with_steps(**{name: torch.from_numpy(bonus)})
