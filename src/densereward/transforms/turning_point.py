"""TurningPoint-GRPO: incremental step rewards, with turning points given their long-term reward."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from densereward.core.components import Transform
from densereward.core.registry import register
from densereward.core.segments import Segments, discounted_reverse_cumsum, previous_in_segment
from densereward.core.trajectories import Trajectories


def turning_point_rewards(gains: Tensor, segments: Segments) -> Tensor:
    """TP-GRPO (Tong et al. 2026, "Alleviating Sparse Rewards by Modeling Step-Wise and
    Long-Term Sampling Effects in Flow-Based GRPO").

    ``g_t`` are incremental rewards (DenseGRPO's ``ΔR_t``). Step ``t > 0`` is a *turning point*
    when it flips the local trend, ``sign(g_t) ≠ sign(g_{t-1})``, and the trend after it agrees
    with it, ``sign(g_t) = sign(G_t)`` with ``G_t = Σ_{s ≥ t} g_s``. A turning point's reward is
    replaced by the aggregated ``G_t`` (its delayed effect on the rest of the trajectory); every
    other step keeps ``g_t``. Our reading of the paper's rule (sign changes only, no parameter);
    zero gains count as no sign.

    >>> turning_point_rewards(torch.tensor([-1.0, 2.0, 0.5]), Segments(torch.tensor([0, 3]))).tolist()
    [-1.0, 2.5, 0.5]
    """
    to_go = discounted_reverse_cumsum(gains, segments, 1.0)
    previous = previous_in_segment(gains, segments, 0.0)
    sign, before, trend = gains.sign(), previous.sign(), to_go.sign()
    turning = (sign != 0) & (before != 0) & (sign != before) & (sign == trend)
    return torch.where(turning, to_go, gains)


@register(
    "transform",
    "turning_point",
    paper="TurningPoint-GRPO (Tong et al. 2026): turning points get the long-term reward",
)
@dataclass(frozen=True)
class TurningPoint(Transform):
    """Incremental rewards; steps that flip the trend toward the trajectory's own get ``Σ_{s≥t} g_s``."""

    source: str = "reward"
    target: str | None = None

    def __call__(self, batch: Trajectories, iteration: int = 0) -> Trajectories:
        rewards = turning_point_rewards(batch.step(self.source), batch.segments)
        return batch.with_steps(**{self.target or self.source: rewards})
