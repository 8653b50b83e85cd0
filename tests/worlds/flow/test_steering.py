"""Feynman-Kac steering: a constant potential leaves sampling unchanged; a reward one tilts it."""

from __future__ import annotations

import torch

from densereward.worlds.flow.model import complete_ode, sample_sde
from densereward.worlds.flow.steering import fk_steer
from densereward.worlds.flow.world import FlowSetup
from tests.worlds.flow.conftest import WORLD


def constant(x: torch.Tensor, k: int, prompts: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), 0.3)


def permutation_p_value(a: torch.Tensor, b: torch.Tensor, rounds: int = 500) -> float:
    """Two-sample permutation test on the energy distance of 2-D samples."""

    def energy(x: torch.Tensor, y: torch.Tensor) -> float:
        return float(
            2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()
        )

    observed = energy(a, b)
    pooled = torch.cat([a, b])
    generator = torch.Generator().manual_seed(0)
    exceed = 0
    for _ in range(rounds):
        order = torch.randperm(pooled.shape[0], generator=generator)
        exceed += energy(pooled[order[: a.shape[0]]], pooled[order[a.shape[0] :]]) >= observed
    return (exceed + 1) / (rounds + 1)


def test_constant_potential_is_plain_sampling_exactly(flow_setup: FlowSetup) -> None:
    prompts = torch.arange(4).repeat(3)
    steered = fk_steer(
        flow_setup.model, prompts, 5, WORLD.steps, 0.7, constant, torch.Generator().manual_seed(7)
    )
    plain = sample_sde(
        flow_setup.model,
        prompts.repeat_interleave(5),
        WORLD.steps,
        0.7,
        torch.Generator().manual_seed(7),
    )
    assert torch.equal(steered.samples.reshape(-1, 2), plain.final)
    assert int(steered.resamplings.sum()) == 0
    torch.testing.assert_close(
        steered.log_weights, torch.full((12, 5), -torch.log(torch.tensor(5.0)))
    )


def test_constant_potential_resampled_every_step_matches_plain_sampling_in_distribution(
    flow_setup: FlowSetup,
) -> None:
    # one particle per independent system is an i.i.d. sample of what FK returns
    prompts = torch.zeros(300, dtype=torch.long)
    steered = fk_steer(
        flow_setup.model,
        prompts,
        4,
        WORLD.steps,
        0.7,
        constant,
        torch.Generator().manual_seed(8),
        resample="every",
    )
    assert int(steered.resamplings.min()) == WORLD.steps
    plain = sample_sde(
        flow_setup.model, prompts, WORLD.steps, 0.7, torch.Generator().manual_seed(9)
    )
    assert permutation_p_value(steered.samples[:, 0], plain.final) > 0.01


def test_a_reward_potential_moves_samples_toward_the_reward(flow_setup: FlowSetup) -> None:
    """The power check of the test above: the same test tells a real tilt apart."""
    rewards = flow_setup.rewards

    def completion_gold(x: torch.Tensor, k: int, prompts: torch.Tensor) -> torch.Tensor:
        index = torch.full((x.shape[0],), k)
        return rewards.gold(complete_ode(flow_setup.model, x, index, prompts, WORLD.steps), prompts)

    prompts = torch.zeros(300, dtype=torch.long)
    steered = fk_steer(
        flow_setup.model,
        prompts,
        4,
        WORLD.steps,
        0.7,
        completion_gold,
        torch.Generator().manual_seed(8),
        strength=10.0,
        resample="every",
    )
    plain = sample_sde(
        flow_setup.model, prompts, WORLD.steps, 0.7, torch.Generator().manual_seed(9)
    )
    assert permutation_p_value(steered.samples[:, 0], plain.final) < 0.01
    steered_gold = rewards.gold(steered.samples[:, 0], prompts).mean()
    assert float(steered_gold) > float(rewards.gold(plain.final, prompts).mean()) + 0.1
