from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from densereward.evaluation import (
    epic_canonicalize,
    epic_distance,
    epic_distance_sampled,
    starc_distance,
    starc_distance_rollouts,
)
from tests.reference.distances import epic_canonicalize as epic_reference

mdps = st.tuples(
    st.integers(0, 2**31), st.integers(2, 5), st.integers(1, 3), st.sampled_from([0.5, 0.9, 0.99])
)


def random_mdp(seed: int, states: int, actions: int):
    rng = np.random.default_rng(seed)
    transition = rng.dirichlet(np.ones(states), size=(states, actions))
    reward = rng.normal(size=(states, actions, states))
    return rng, transition, reward


def equivalents(rng, reward, transition, gamma):
    """Rewards with the same optimal policies in every MDP with these dynamics."""
    phi = rng.normal(scale=3.0, size=reward.shape[0])
    shaped = reward + gamma * phi[None, None, :] - phi[:, None, None]
    scaled = float(rng.uniform(0.1, 10.0)) * shaped
    # S'-redistribution: noise with zero mean under tau(s, a).
    noise = rng.normal(size=reward.shape)
    noise -= np.einsum("sax,sax->sa", transition, noise)[:, :, None]
    return shaped, scaled, scaled + noise


@given(mdps)
def test_epic_canonicalisation_matches_the_nested_expectation(mdp) -> None:
    seed, states, actions, gamma = mdp
    _, _, reward = random_mdp(seed, states, actions)
    np.testing.assert_allclose(
        epic_canonicalize(reward, gamma), epic_reference(reward, gamma), atol=1e-10
    )


@given(mdps)
def test_epic_is_zero_for_shaping_and_scaling_and_positive_otherwise(mdp) -> None:
    seed, states, actions, gamma = mdp
    rng, transition, reward = random_mdp(seed, states, actions)
    shaped, scaled, _ = equivalents(rng, reward, transition, gamma)
    assert epic_distance(reward, shaped, gamma) < 1e-6
    assert epic_distance(reward, scaled, gamma) < 1e-6
    assert epic_distance(reward, -reward, gamma) == pytest.approx(1.0)
    assert epic_distance(reward, rng.normal(size=reward.shape), gamma) > 1e-3


@given(mdps, st.sampled_from([1, 2]))
def test_starc_is_zero_for_shaping_scaling_redistribution_and_positive_otherwise(
    mdp, order
) -> None:
    seed, states, actions, gamma = mdp
    rng, transition, reward = random_mdp(seed, states, actions)
    for equivalent in equivalents(rng, reward, transition, gamma):
        assert starc_distance(reward, equivalent, transition, gamma, order) < 1e-6
    other = rng.normal(size=reward.shape)
    if actions > 1:  # with one action every reward is shaping of every other
        assert starc_distance(reward, other, transition, gamma, order) > 1e-3


@given(mdps)
def test_sampled_epic_with_exhaustive_samples_equals_tabular(mdp) -> None:
    seed, states, actions, gamma = mdp
    rng, _, reward = random_mdp(seed, states, actions)
    other = rng.normal(size=reward.shape)
    s, a, x = (
        g.reshape(-1)
        for g in np.meshgrid(
            np.arange(states), np.arange(actions), np.arange(states), indexing="ij"
        )
    )

    def table(r):
        return lambda obs, act, nxt: r[obs, act, nxt]

    sampled = epic_distance_sampled(
        table(reward), table(other), (s, a, x), np.arange(states), np.arange(actions), gamma
    )
    assert sampled == pytest.approx(epic_distance(reward, other, gamma), abs=1e-10)


@given(st.integers(0, 2**31), st.integers(2, 6), st.integers(2, 3), st.sampled_from([0.5, 0.9]))
def test_rollout_starc_equals_tabular_on_deterministic_mdp(seed, states, actions, gamma) -> None:
    rng = np.random.default_rng(seed)
    following = rng.integers(0, states, size=(states, actions))
    transition = np.zeros((states, actions, states))
    transition[np.arange(states)[:, None], np.arange(actions)[None, :], following] = 1.0
    reward_a, reward_b = rng.normal(size=(2, states, actions, states))
    s, a = (
        g.reshape(-1) for g in np.meshgrid(np.arange(states), np.arange(actions), indexing="ij")
    )
    x = following[s, a]
    one_hot = np.eye(states)
    distance = starc_distance_rollouts(
        reward_a[s, a, x], reward_b[s, a, x], one_hot[s], one_hot[x], np.zeros(s.size, bool), gamma
    )
    assert distance == pytest.approx(
        starc_distance(reward_a, reward_b, transition, gamma), abs=1e-5
    )


def test_rollout_matrix_on_trajectories_sees_through_shaping() -> None:
    import torch

    from densereward import Trajectories
    from densereward.evaluation.reward_distance import rollout_distance_matrix

    rng = np.random.default_rng(0)
    states, gamma = 6, 0.9
    phi = rng.normal(size=states)
    reward_table = rng.normal(size=(states, states))
    lengths = rng.integers(2, 8, size=40)
    visited = [rng.integers(0, states, size=n + 1) for n in lengths]  # s_0 .. s_T
    one_hot = np.eye(states)
    true = [reward_table[v[:-1], v[1:]] for v in visited]
    shaped = [t + gamma * phi[v[1:]] - phi[v[:-1]] for t, v in zip(true, visited, strict=True)]
    # Truncated trajectories: the potential of s_T is kept, and s_T's features come per trajectory.
    batch = Trajectories.from_episodes(
        {
            "true": true,
            "shaped": shaped,
            "noise": [rng.normal(size=n) for n in lengths],
            "obs": [one_hot[v[:-1]] for v in visited],
        },
        {
            "terminated": np.zeros(40, bool),
            "truncated": np.ones(40, bool),
            "final_obs": np.stack([one_hot[v[-1]] for v in visited]),
        },
    )
    matrix = rollout_distance_matrix(batch, ["true", "shaped", "noise"], "obs", gamma)
    assert matrix[0, 1] < 1e-6 and matrix[0, 2] > 0.1
    assert np.allclose(matrix, matrix.T) and np.all(np.diag(matrix) == 0)
    assert isinstance(batch.steps["obs"], torch.Tensor)


def test_compare_cli(tmp_path) -> None:
    from tests.cli.test_cli import EXAMPLE, run

    demo = run("compare", "--demo", "--gamma", "0.9")
    assert demo.returncode == 0 and "STARC" in demo.stdout and "EPIC" in demo.stdout
    missing = run("compare", EXAMPLE)
    assert missing.returncode == 2 and "give a trajectories file and --rewards" in missing.stderr
    twice = run("compare", EXAMPLE, "--rewards", "prm,prm")
    assert twice.returncode == 2 and "field 'steps.prm': named twice" in twice.stderr
