"""G²RPO's multi-granularity advantage integration: per-timestep GRPO advantages, summed over
dense rewards computed at several denoising granularities."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from densereward.core.components import Estimator
from densereward.core.errors import ConfigError
from densereward.core.parameters import Positive
from densereward.core.registry import register
from densereward.core.trajectories import Trajectories
from densereward.estimators.base import Estimate
from densereward.estimators.timestep_grpo import estimate_timestep_grpo


def estimate_multi_granularity_grpo(
    batch: Trajectories, processes: tuple[str, ...], eps: float = 1e-6
) -> Estimate:
    """Multi-Granularity Advantage Integration (G²RPO, "Granular GRPO for Precise Reward in Flow
    Models", Zhou et al. 2025).

    Each step column ``r^g`` in ``processes`` is one granularity's step reward (G²RPO evaluates
    a step's sampling direction by denoising the rest of the way at several scales ``g ∈ G``;
    here ``ode_reward_gain`` with ``granularity: g``, ODE completions of stride ``g``). Each is
    normalised within its group at the same step index and the advantages are summed:

    ``A_{i,t} = Σ_{g ∈ G} (r^g_{i,t} − mean_{j ∈ grp(i)} r^g_{j,t}) / (std_{j ∈ grp(i)} r^g_{j,t} + eps)``

    so a step is credited by its reward gain at every scale, and a bias of one fixed scale (a
    coarse completion that misjudges a state) is outvoted by the others. One granularity is
    ``timestep_grpo``. Returns are the sum of the granularities' returns-to-go (value targets).

    >>> batch = Trajectories.from_episodes(
    ...     {"a": [[1.0, 0.0], [0.0, 5.0]], "b": [[2.0, 1.0], [0.0, 0.0]]}, {"group": [0, 0]})
    >>> [round(a, 3) for a in estimate_multi_granularity_grpo(batch, ("a", "b")).advantages.tolist()]
    [1.414, -0.0, -1.414, 0.0]
    """
    if not processes:
        raise ConfigError("processes", "name at least one step column")
    estimates = [estimate_timestep_grpo(batch, process, eps=eps) for process in processes]
    advantages = torch.stack([e.advantages for e in estimates]).sum(0)
    returns = torch.stack([e.returns for e in estimates]).sum(0)
    return Estimate(advantages, returns)


@register(
    "estimator",
    "multi_granularity_grpo",
    paper="G²RPO (Zhou et al. 2025): multi-granularity advantage integration",
)
@dataclass(frozen=True)
class MultiGranularityGRPO(Estimator):
    """Per-timestep group z-scores of several granularities' step rewards, summed."""

    processes: tuple[str, ...] = ("reward",)
    """the step columns, one per granularity (``ode_reward_gain`` signals of different strides)"""
    eps: Positive = 1e-6
    """added to each cell's standard deviation"""

    def __call__(self, batch: Trajectories) -> Estimate:
        return estimate_multi_granularity_grpo(batch, self.processes, self.eps)
