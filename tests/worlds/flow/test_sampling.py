"""B²-DiffuRL's branch sampling and DenseGRPO's per-timestep noise calibration."""

from __future__ import annotations

import copy
import math

import torch
from torch.distributions import Normal

from densereward.worlds.flow.model import sample_sde, step_log_probs
from densereward.worlds.flow.sampling import BranchSampling, branch_point, calibrate_noise
from densereward.worlds.flow.world import FlowGRPOConfig, FlowSetup
from tests.worlds.flow.conftest import WORLD
from tests.worlds.flow.test_model import hand_sde_mean_std


def branched(setup: FlowSetup, branch: int, seed: int = 0):
    trainer = FlowGRPOConfig(group_size=4, prompts_per_update=3)
    policy = copy.deepcopy(setup.model)
    generator = torch.Generator().manual_seed(seed)
    return WORLD.rollout(policy, setup.model, setup, trainer, generator, branch=branch)


def test_branches_share_their_prefix_exactly_and_differ_after_it(flow_setup: FlowSetup) -> None:
    steps = WORLD.steps
    for branch in (1, 3, 5):
        batch, extras = branched(flow_setup, branch)
        states = batch.step("state").view(3, 4, steps, 2)
        nexts = batch.step("next_state").view(3, 4, steps, 2)
        log_probs = extras["log_probs"].view(3, 4, steps)
        for group in range(3):
            for member in range(1, 4):
                same = states[group, member, :branch], states[group, 0, :branch]
                assert torch.equal(*same)
                assert torch.equal(nexts[group, member, :branch], nexts[group, 0, :branch])
                assert torch.equal(log_probs[group, member, :branch], log_probs[group, 0, :branch])
                # the branch point is shared; every step after it is the member's own
                assert torch.equal(states[group, member, branch], states[group, 0, branch])
                assert not torch.equal(nexts[group, member, branch:], nexts[group, 0, branch:])
        # groups are different prefixes
        assert not torch.equal(states[0, 0, 1 : branch + 1], states[1, 0, 1 : branch + 1])
        assert bool((batch.episode("branch_index") == branch).all())
        trained = extras["trained"].view(3, 4, steps)
        assert bool((trained[..., :branch] == 0).all() and (trained[..., branch:] == 1).all())
        mask = BranchSampling()(batch, "trained").step("trained").float()
        assert torch.equal(mask, extras["trained"])
        # the stored log-probabilities are the policy's, recomputed step by step
        again, _ = step_log_probs(
            flow_setup.model,
            batch.step("state"),
            batch.step("next_state"),
            batch.step("step_index"),
            extras["prompts"],
            steps,
            torch.full((steps,), 0.7),
        )
        torch.testing.assert_close(again.detach(), extras["log_probs"], rtol=1e-5, atol=1e-4)
        # each step continues from the previous one across the branch point
        assert torch.equal(states[..., 1:, :], nexts[..., :-1, :])


def test_backward_progressive_schedule_trains_the_last_steps_first() -> None:
    points = [branch_point(u, 20, 10, 5) for u in range(20)]
    assert points == [8] * 4 + [6] * 4 + [4] * 4 + [2] * 4 + [0] * 4
    assert [branch_point(u, 7, 6, 4) for u in range(7)] == [4, 4, 3, 3, 1, 1, 0]
    assert {branch_point(u, 5, 10, 1) for u in range(5)} == {0}  # one stage: plain sampling


def test_per_timestep_noise_levels_keep_log_probs_exact(flow_setup: FlowSetup) -> None:
    steps = WORLD.steps
    levels = torch.tensor([0.3, 0.9, 0.5, 1.2, 0.2, 0.7])
    prompts = torch.arange(4).repeat(5)
    trajectory = sample_sde(
        flow_setup.model, prompts, steps, levels, torch.Generator().manual_seed(4)
    )
    with torch.no_grad():
        for k in range(steps):
            mean, std = hand_sde_mean_std(
                flow_setup.model, trajectory.states[:, k], prompts, k, steps, float(levels[k])
            )
            expected = Normal(mean, std).log_prob(trajectory.next_states[:, k]).sum(1)
            torch.testing.assert_close(trajectory.log_probs[:, k], expected, rtol=1e-5, atol=1e-4)
    assert trajectory.stds[3] > trajectory.stds[4]  # the levels matter


def slow_calibration(levels, rewards, index, step, balance, lowest, highest):
    out = []
    for t, level in enumerate(levels):
        here = [r for r, i in zip(rewards, index, strict=True) if i == t]
        positive = sum(r > 0 for r in here)
        negative = sum(r < 0 for r in here)
        if positive + negative == 0:
            out.append(level)
            continue
        moved = (
            level + step
            if abs(positive - negative) / (positive + negative) <= balance
            else (level - step)
        )
        out.append(min(max(moved, lowest), highest))
    return out


def test_noise_calibration_raises_balanced_timesteps_and_lowers_one_sided_ones() -> None:
    generator = torch.Generator().manual_seed(5)
    steps = 7
    levels = torch.rand(steps, generator=generator) * 2
    index = torch.arange(steps).repeat(9)
    rewards = torch.randn(steps * 9, generator=generator) + torch.linspace(-2, 2, steps).repeat(9)
    rewards[index == 3] = 0.0
    rewards[index == 1] = torch.tensor([1.0, -1.0] * 4 + [0.5])  # 5 up, 4 down: balanced
    expected = slow_calibration(
        levels.tolist(), rewards.tolist(), index.tolist(), 0.05, 0.4, 0.1, 1.9
    )
    got = calibrate_noise(levels, rewards, index, 0.05, 0.4, 0.1, 1.9)
    torch.testing.assert_close(got, torch.tensor(expected), rtol=0, atol=1e-6)
    assert math.isclose(float(got[3]), float(levels[3]))
    assert (got > levels).any() and (got < levels).any()
