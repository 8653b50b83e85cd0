"""DenseGRPO's step gains telescope, and the estimators and transforms they feed."""

from __future__ import annotations

import copy

import torch

from densereward.core.components import SignalContext
from densereward.core.segments import Segments
from densereward.core.trajectories import Trajectories
from densereward.estimators.timestep_grpo import estimate_timestep_grpo
from densereward.transforms.turning_point import turning_point_rewards
from densereward.worlds.flow.model import complete_ode
from densereward.worlds.flow.signals import ODERewardGain
from densereward.worlds.flow.world import Completion, FlowGRPOConfig, FlowSetup
from tests.worlds.flow.conftest import WORLD


def rollout(setup: FlowSetup, seed: int = 0) -> Trajectories:
    trainer = FlowGRPOConfig(group_size=5, prompts_per_update=3)
    policy = copy.deepcopy(setup.model)
    batch, _ = WORLD.rollout(
        policy, setup.model, setup, trainer, torch.Generator().manual_seed(seed)
    )
    return batch


def test_dense_grpo_step_gains_telescope_to_terminal_minus_initial(flow_setup: FlowSetup) -> None:
    batch = rollout(flow_setup)
    completion = Completion(flow_setup.model, flow_setup.rewards, "gold", WORLD.steps)
    gain = ODERewardGain().bind(SignalContext(models={"completion": completion}))
    out = gain(batch, "gain")
    totals = torch.stack([g.sum() for g in out.to_episodes("gain")])
    first = batch.offsets[:-1]
    noise = batch.step("state")[first]
    prompts = batch.episode("prompt")
    initial = flow_setup.rewards.gold(
        complete_ode(flow_setup.model, noise, torch.zeros_like(prompts), prompts, WORLD.steps),
        prompts,
    )
    torch.testing.assert_close(totals, (batch.outcome - initial.double()), atol=1e-6, rtol=0)
    # the latent reward after the last step is the terminal reward itself
    last = batch.segments.last
    torch.testing.assert_close(out.step("gain_latent")[last], batch.outcome, atol=1e-6, rtol=0)
    assert bool((out.step("gain").abs() > 0).any())


def slow_timestep_grpo(batch: Trajectories, column: str, eps: float) -> list[float]:
    rewards = batch.to_episodes(column)
    groups = batch.episode("group").tolist()
    out = []
    for i, own in enumerate(rewards):
        for t, value in enumerate(own.tolist()):
            peers = torch.tensor(
                [
                    float(r[t])
                    for j, r in enumerate(rewards)
                    if groups[j] == groups[i] and len(r) > t
                ]
            )
            if len(peers) < 2 or bool((peers == peers[0]).all()):
                out.append(0.0)
            else:
                out.append((value - float(peers.mean())) / (float(peers.std()) + eps))
    return out


def test_timestep_grpo_normalises_each_step_index_within_its_group() -> None:
    generator = torch.Generator().manual_seed(0)
    rewards = torch.randn(6 * 4, generator=generator).double()
    rewards[4:8] = rewards[0:4]  # two identical trajectories do not make a cell constant
    batch = Trajectories(
        torch.arange(0, 25, 4), {"gain": rewards}, {"group": torch.tensor([0, 0, 0, 1, 1, 1])}
    )
    expected = slow_timestep_grpo(batch, "gain", 1e-6)
    got = estimate_timestep_grpo(batch, "gain").advantages
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))


def slow_turning_points(gains: list[float]) -> list[float]:
    out = []
    for t, g in enumerate(gains):
        to_go = sum(gains[t:])
        sign = (g > 0) - (g < 0)
        flip = (
            t > 0
            and gains[t - 1] != 0
            and sign != 0
            and sign != ((gains[t - 1] > 0) - (gains[t - 1] < 0))
        )
        agrees = sign == ((to_go > 0) - (to_go < 0))
        out.append(to_go if flip and agrees else g)
    return out


def test_turning_points_get_the_rest_of_the_trajectory_s_gain() -> None:
    generator = torch.Generator().manual_seed(1)
    gains = torch.randn(5 * 6, generator=generator).double()
    segments = Segments(torch.arange(0, 31, 6))
    expected = [v for e in gains.view(5, 6).tolist() for v in slow_turning_points(e)]
    got = turning_point_rewards(gains, segments)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    assert not torch.equal(got, gains)  # some turning points were found
