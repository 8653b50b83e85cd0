"""The samplers: Flow-GRPO's SDE log-probabilities are exact Gaussian densities of its steps."""

from __future__ import annotations

import math

import torch
from torch.distributions import Normal

from densereward.worlds.flow.model import (
    complete_ode,
    sample_ode,
    sample_sde,
    step_log_probs,
    time_grid,
)
from densereward.worlds.flow.world import FlowSetup
from tests.worlds.flow.conftest import WORLD


def hand_sde_mean_std(model, x, prompts, k, steps, a):
    """Flow-GRPO's ``sde_step_with_logprob`` written out again, scalar by scalar."""
    t = 1.0 - k / steps
    dt = -1.0 / steps
    t_denominator = (1.0 - 1.0 / steps) if k == 0 else t
    sigma = a * math.sqrt(t / (1.0 - t_denominator))
    v = model(x, torch.tensor(t), prompts)
    mean = x * (1 + sigma**2 / (2 * t) * dt) + v * (1 + sigma**2 * (1 - t) / (2 * t)) * dt
    return mean, sigma * math.sqrt(-dt)


def test_sde_log_probs_equal_an_independent_normal_density(flow_setup: FlowSetup) -> None:
    model, steps, a = flow_setup.model, WORLD.steps, 0.7
    prompts = torch.arange(4).repeat(8)
    trajectory = sample_sde(model, prompts, steps, a, torch.Generator().manual_seed(1))
    with torch.no_grad():
        for k in range(steps):
            x = trajectory.states[:, k]
            mean, std = hand_sde_mean_std(model, x, prompts, k, steps, a)
            expected = Normal(mean, std).log_prob(trajectory.next_states[:, k]).sum(1)
            torch.testing.assert_close(trajectory.log_probs[:, k], expected, rtol=1e-5, atol=1e-4)
            # each step continues from the previous one
            if k:
                assert torch.equal(trajectory.states[:, k], trajectory.next_states[:, k - 1])


def test_training_recomputes_the_sampling_log_probs(flow_setup: FlowSetup) -> None:
    steps, n = WORLD.steps, 12
    prompts = torch.arange(4).repeat(3)
    trajectory = sample_sde(flow_setup.model, prompts, steps, 0.7, torch.Generator().manual_seed(2))
    with torch.no_grad():
        log_probs, means = step_log_probs(
            flow_setup.model,
            trajectory.states.reshape(-1, 2),
            trajectory.next_states.reshape(-1, 2),
            torch.arange(steps).repeat(n),
            prompts.repeat_interleave(steps),
            steps,
            0.7,
        )
    torch.testing.assert_close(log_probs, trajectory.log_probs.reshape(-1), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(means, trajectory.means.reshape(-1, 2))


def test_ode_completion_from_the_start_is_the_ode_sample(flow_setup: FlowSetup) -> None:
    prompts = torch.arange(4)
    samples = sample_ode(flow_setup.model, prompts, WORLD.steps, torch.Generator().manual_seed(3))
    noise = torch.randn(4, 2, generator=torch.Generator().manual_seed(3))
    completed = complete_ode(flow_setup.model, noise, torch.zeros(4, dtype=torch.long), prompts, 6)
    torch.testing.assert_close(samples, completed)
    # a state already at t = 0 (grid index T) is its own completion
    clean = complete_ode(flow_setup.model, noise, torch.full((4,), 6), prompts, 6)
    assert torch.equal(clean, noise)
    assert time_grid(6)[-1] == 0.0


def test_pretrained_flow_puts_mass_on_both_modes_of_each_prompt(flow_setup: FlowSetup) -> None:
    prompts = torch.arange(4).repeat(200)
    x = sample_ode(flow_setup.model, prompts, WORLD.steps, torch.Generator().manual_seed(4))
    on_target = (flow_setup.rewards.gold(x, prompts) > 0.5).float().mean()
    assert 0.03 < float(on_target) < 0.6  # the rare target mode (data weight 0.25) is reachable
