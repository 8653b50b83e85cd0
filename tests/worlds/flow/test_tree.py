"""Diffusion tree sampling: a constant reward leaves sampling unchanged; a real one tilts it."""

from __future__ import annotations

import math

import torch

from densereward.worlds.flow.model import sample_sde
from densereward.worlds.flow.tree import soft_value, tree_sample
from densereward.worlds.flow.world import FlowSetup
from tests.worlds.flow.conftest import WORLD
from tests.worlds.flow.test_steering import permutation_p_value


def constant(x: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), 0.3)


def test_soft_value_is_a_log_mean_exp_over_present_children() -> None:
    values = torch.tensor([[0.1, 0.5, 9.0], [0.2, 0.2, 0.2]])
    present = torch.tensor([[True, True, False], [True, True, True]])
    expected = [
        math.log((math.exp(2 * 0.1) + math.exp(2 * 0.5)) / 2) / 2,
        0.2,
    ]
    torch.testing.assert_close(soft_value(values, present, 2.0), torch.tensor(expected))


def test_tree_grows_one_path_per_rollout_and_counts_its_network_evaluations(
    flow_setup: FlowSetup,
) -> None:
    steps, rollouts, width = WORLD.steps, 9, 2
    prompts = torch.arange(4)
    out = tree_sample(
        flow_setup.model,
        prompts,
        rollouts,
        steps,
        0.7,
        flow_setup.rewards.gold,
        torch.Generator().manual_seed(0),
        width=width,
    )
    tree = out.tree
    nodes = tree.used - 1  # without the root
    assert int(nodes.min()) > steps + 1 and int(nodes.max()) <= rollouts * (steps + 1)
    assert tree.evaluations == int((nodes - (tree.depth == 0).sum(1)).sum())
    # a rollout adds at most one leaf (none when it walks a full path down to an old leaf)
    leaf_counts = (tree.depth == steps).sum(1)
    assert int(leaf_counts.max()) <= rollouts and int(leaf_counts.min()) >= width
    assert int((tree.children >= 0).sum(2).max()) <= width
    # the best leaf is the highest-reward clean state in the tree
    leaves = tree.depth == steps
    rewards = flow_setup.rewards.gold(
        tree.states.reshape(-1, 2), prompts.repeat_interleave(tree.states.shape[1])
    ).view(4, -1)
    best = torch.where(leaves, rewards, torch.full_like(rewards, -1.0)).max(1).values
    torch.testing.assert_close(out.best_reward, best)


def test_constant_reward_tree_sampling_matches_plain_sampling_in_distribution(
    flow_setup: FlowSetup,
) -> None:
    prompts = torch.zeros(300, dtype=torch.long)
    out = tree_sample(
        flow_setup.model, prompts, 6, WORLD.steps, 0.7, constant, torch.Generator().manual_seed(8)
    )
    plain = sample_sde(
        flow_setup.model, prompts, WORLD.steps, 0.7, torch.Generator().manual_seed(9)
    )
    assert permutation_p_value(out.samples, plain.final) > 0.01


def test_a_reward_tilts_tree_samples_toward_it(flow_setup: FlowSetup) -> None:
    """The power check of the test above: the same test tells a real tilt apart."""
    prompts = torch.zeros(300, dtype=torch.long)
    gold = flow_setup.rewards.gold
    out = tree_sample(
        flow_setup.model, prompts, 6, WORLD.steps, 0.7, gold, torch.Generator().manual_seed(8)
    )
    plain = sample_sde(
        flow_setup.model, prompts, WORLD.steps, 0.7, torch.Generator().manual_seed(9)
    )
    assert permutation_p_value(out.samples, plain.final) < 0.01
    assert float(gold(out.samples, prompts).mean()) > float(gold(plain.final, prompts).mean()) + 0.1
    assert float(out.best_reward.mean()) >= float(gold(out.samples, prompts).mean())
