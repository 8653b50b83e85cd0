"""DenseGRPO's dense reward: the reward gain of each denoising step, from ODE completions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from densereward.core.components import BoundSignal, Needs, Signal, SignalContext
from densereward.core.parameters import Count
from densereward.core.registry import register
from densereward.core.segments import broadcast
from densereward.core.trajectories import Trajectories

Completion = Callable[[Tensor, Tensor, Tensor, int], Tensor]
"""``(states [N, 2], grid indices [N], prompts [N], stride) -> R(x̂_0) [N]``: the reward of each
state's deterministic (ODE) completion under the live policy, in Euler steps of ``stride`` grid
intervals."""


def reward_gains(
    batch: Trajectories, completion: Completion, granularity: int = 1
) -> tuple[Tensor, Tensor]:
    """DenseGRPO (Deng et al. 2025): ``ΔR_t = R(x̂_0(x_{t-1})) - R(x̂_0(x_t))`` per step.

    Step ``k`` of a trajectory moves ``state`` (at grid index ``step_index``) to ``next_state``;
    ``x̂_0(·)`` is the ODE completion from there with the current velocity field, and at the last
    step ``x̂_0(x_0) = x_0``, so ``ΔR`` there ends on the terminal reward. The gains telescope:
    ``Σ_k ΔR_k = R(x_0) - R(x̂_0(x_T))``, terminal reward minus that of the initial noise's
    completion. ``granularity`` is the completions' Euler stride in grid intervals (G²RPO's
    denoising scale); the gains telescope at every granularity. Returns ``(gains, latent)`` with
    ``latent_k = R(x̂_0(next_state_k))``.
    """
    prompts = broadcast(batch.episode("prompt"), batch.segments)
    index = batch.step("step_index")
    before = completion(batch.step("state"), index, prompts, granularity)
    after = completion(batch.step("next_state"), index + 1, prompts, granularity)
    return (after - before).double(), after.double()


@register("signal", "ode_reward_gain", paper="DenseGRPO (Deng et al. 2025): step-wise reward gain")
@dataclass(frozen=True)
class ODERewardGain(Signal):
    """``ΔR_t = R(ODE(x_{t-1})) - R(ODE(x_t))`` per denoising step, from the world's
    ``completion`` model; also writes ``<name>_latent``, the completion reward after the step."""

    granularity: Count = 1
    """Euler stride of the ODE completions, in grid intervals (1: the sampler's own steps)"""

    def needs(self) -> Needs:
        return Needs(models=("completion",))

    def bind(self, context: SignalContext) -> BoundSignal:
        completion = context.model("completion", "ode_reward_gain")

        def gain(batch: Trajectories, name: str) -> Trajectories:
            gains, latent = reward_gains(batch, completion, self.granularity)
            return batch.with_steps(**{name: gains, f"{name}_latent": latent})

        return gain
