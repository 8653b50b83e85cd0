"""Potential shaping leaves optimal policies unchanged, and handles truncation correctly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from densereward import Trajectories, ValidationError
from densereward.core.segments import Segments
from densereward.estimators import estimate_gae
from densereward.transforms import shape_potential
from tests.reference import transforms as reference
from tests.strategies import batches, episodes_of


def value_iteration(P: np.ndarray, R: np.ndarray, terminal: np.ndarray, gamma: float) -> np.ndarray:
    """Q* of a tabular MDP. P[s, a, s'], R[s, a, s']; no value flows out of terminal states."""
    q = np.zeros(P.shape[:2])
    for _ in range(5000):
        v = np.where(terminal, 0.0, q.max(1))
        new = (P * (R + gamma * v[None, None, :])).sum(2)
        if np.abs(new - q).max() < 1e-13:
            break
        q = new
    return q


@given(
    st.integers(0, 2**31), st.integers(2, 7), st.integers(2, 4), st.sampled_from([0.5, 0.9, 0.99])
)
def test_potential_shaping_preserves_optimal_policy(seed, states, actions, gamma) -> None:
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(states), size=(states, actions))
    R = rng.normal(size=(states, actions, states))
    terminal = rng.random(states) < 0.3
    phi = rng.normal(scale=5.0, size=states)
    # Our transform on every transition (s, a, s'): one trajectory per transition, terminated when
    # s' is terminal, truncated (potential continues) otherwise.
    s, a, s_next = np.meshgrid(
        np.arange(states), np.arange(actions), np.arange(states), indexing="ij"
    )
    s, a, s_next = s.ravel(), a.ravel(), s_next.ravel()
    n = s.size
    shaped = (
        shape_potential(
            torch.from_numpy(R.ravel()),
            torch.from_numpy(phi[s]),
            Segments(torch.arange(n + 1)),
            torch.from_numpy(terminal[s_next]),
            torch.from_numpy(phi[s_next]),
            gamma,
        )
        .numpy()
        .reshape(R.shape)
    )
    q = value_iteration(P, R, terminal, gamma)
    q_shaped = value_iteration(P, shaped, terminal, gamma)
    # Ng et al.: Q'(s, a) = Q(s, a) - Phi(s), hence the same greedy policy in every state.
    live = ~terminal
    np.testing.assert_allclose(q_shaped[live], (q - phi[:, None])[live], atol=1e-8)
    np.testing.assert_array_equal(q_shaped[live].argmax(1), q[live].argmax(1))


@given(
    st.integers(0, 2**31),
    st.integers(1, 9),
    st.sampled_from([0.9, 0.99, 1.0]),
    st.sampled_from([0.0, 0.9, 1.0]),
)
def test_gae_on_shaped_rewards_equals_gae_on_original_at_any_truncation(
    seed, length, gamma, lam
) -> None:
    # With V' = V - Phi, GAE's TD errors on shaped rewards equal the original ones exactly, for any
    # Phi and any lambda -- provided the potential is *not* zeroed where the episode was truncated.
    rng = np.random.default_rng(seed)
    for status in ("terminated", "truncated"):
        rewards, values, phi = (
            rng.normal(size=length),
            rng.normal(size=length),
            rng.normal(size=length),
        )
        final_value, final_phi = rng.normal(), rng.normal()
        terminated = status == "terminated"
        flags = {"terminated": [terminated], "truncated": [not terminated]}
        original = Trajectories.from_episodes(
            {"reward": [rewards], "value": [values]}, {**flags, "bootstrap_value": [final_value]}
        )
        shaped_rewards = shape_potential(
            torch.from_numpy(rewards),
            torch.from_numpy(phi),
            original.segments,
            original.terminated,
            torch.tensor([final_phi]),
            gamma,
        )
        shaped = Trajectories.from_episodes(
            {"reward": [shaped_rewards], "value": [values - phi]},
            {**flags, "bootstrap_value": [final_value - final_phi]},
        )
        torch.testing.assert_close(
            estimate_gae(shaped, gamma=gamma, lam=lam).advantages,
            estimate_gae(original, gamma=gamma, lam=lam).advantages,
        )


def test_zeroing_potential_on_truncation_would_break_invariance() -> None:
    # The imitation-library bug, reproduced: treat the truncated step as terminal and the shaped
    # advantage no longer equals the original one.
    rewards, values, phi = np.array([1.0, 0.0]), np.array([0.5, 0.2]), np.array([2.0, 3.0])
    truncated = {"terminated": [False], "truncated": [True], "bootstrap_value": [0.7]}
    original = Trajectories.from_episodes({"reward": [rewards], "value": [values]}, truncated)
    buggy = shape_potential(
        torch.from_numpy(rewards),
        torch.from_numpy(phi),
        original.segments,
        torch.tensor([True]),
        None,
        0.9,
    )
    shaped = Trajectories.from_episodes(
        {"reward": [buggy], "value": [values - phi]}, {**truncated, "bootstrap_value": [0.7 - 4.0]}
    )
    assert not torch.allclose(
        estimate_gae(shaped, gamma=0.9).advantages, estimate_gae(original, gamma=0.9).advantages
    )


def test_truncated_trajectory_without_final_potential_is_an_error() -> None:
    with pytest.raises(ValidationError, match=r"trajectory 0.*final_potential"):
        shape_potential(
            torch.zeros(2),
            torch.zeros(2),
            Segments(torch.tensor([0, 2])),
            torch.tensor([False]),
            None,
            0.9,
        )


def test_prm_potential_at_next_state_telescopes() -> None:
    from densereward.transforms.potential import PotentialShaping

    batch = Trajectories.from_episodes({"prm": [[0.2, 0.5, 0.9]], "reward": [[0.0, 0.0, 1.0]]})
    shaped = PotentialShaping(potential="prm", gamma=1.0, potential_at="next_state")(batch)
    # gamma = 1, terminated: the shaped return is the original return minus Phi(s_0) = 0, and the
    # per-step rewards are the PRM's increments (the terminal potential is 0).
    torch.testing.assert_close(
        shaped.step("reward"), torch.tensor([0.2, 0.3, 1.0 - 0.5], dtype=torch.float64)
    )


@given(batches(long=True), st.sampled_from([0.0, 0.9, 1.0]))
def test_potential_shaping_matches_loop_reference(batch: Trajectories, gamma: float) -> None:
    # Hypothesis batches mix terminated, truncated and unfinished trajectories of every length,
    # so truncation lands at every position.
    final = batch.episodes["bootstrap_value"]
    out = shape_potential(
        batch.step("reward"), batch.step("value"), batch.segments, batch.terminated, final, gamma
    )
    expected = reference.shape_potential(
        episodes_of(batch, "reward"),
        episodes_of(batch, "value"),
        batch.terminated.tolist(),
        final.tolist(),
        gamma,
    )
    np.testing.assert_allclose(out.numpy(), np.concatenate(expected), rtol=1e-12, atol=1e-12)
