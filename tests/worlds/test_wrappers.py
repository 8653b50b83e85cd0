"""Online shaping wrappers equal the offline transform on the same transitions, in both
autoreset modes, across terminations and time-limit truncations."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from densereward.core.layouts import from_rollout_buffer
from densereward.transforms import shape_potential
from densereward.worlds.control import PotentialShaping, VectorPotentialShaping

GAMMA = 0.9


def potential(obs: np.ndarray) -> np.ndarray:
    obs = np.asarray(obs, dtype=np.float64)
    return 3.0 * obs[:, 0] + obs[:, 2] + 1.0


@pytest.mark.parametrize("mode", [AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP])
def test_vector_wrapper_equals_offline_shaping(mode) -> None:
    # CartPole with a 15-step limit: random actions give both terminations and truncations.
    envs = SyncVectorEnv(
        [lambda: gym.make("CartPole-v1", max_episode_steps=15) for _ in range(3)],
        autoreset_mode=mode,
    )
    wrapped = VectorPotentialShaping(envs, potential, GAMMA)
    obs, _ = wrapped.reset(seed=3)
    rng = np.random.default_rng(0)
    T, N = 80, 3
    observations = np.zeros((T, N, 4))
    true, shaped = np.zeros((T, N)), np.zeros((T, N))
    terminated, truncated = np.zeros((T, N), bool), np.zeros((T, N), bool)
    after = np.zeros((T, N, 4))  # s' of each transition
    for t in range(T):
        observations[t] = obs
        obs, reward, term, trunc, info = wrapped.step(rng.integers(0, 2, size=N))
        true[t], shaped[t], terminated[t], truncated[t] = info["true_reward"], reward, term, trunc
        after[t] = obs
        for i in np.flatnonzero(term | trunc):
            if mode == AutoresetMode.SAME_STEP:
                after[t, i] = info["final_obs"][i]
    assert terminated.any() and truncated.any()
    previous_done = np.zeros(N, bool)
    batch = from_rollout_buffer(
        torch.from_numpy(true),
        torch.from_numpy(terminated),
        torch.from_numpy(truncated),
        columns={
            "phi": torch.from_numpy(potential(observations.reshape(-1, 4)).reshape(T, N)),
            "phi_after": torch.from_numpy(potential(after.reshape(-1, 4)).reshape(T, N)),
            "shaped": torch.from_numpy(shaped),
        },
        autoreset="same_step" if mode == AutoresetMode.SAME_STEP else "next_step",
        previous_done=torch.from_numpy(previous_done),
    )
    offline = shape_potential(
        batch.step("reward"),
        batch.step("phi"),
        batch.segments,
        batch.terminated,
        batch.step("phi_after")[batch.segments.last],
        GAMMA,
    )
    np.testing.assert_allclose(
        batch.step("shaped").numpy(), offline.numpy(), rtol=1e-12, atol=1e-12
    )
    if mode == AutoresetMode.NEXT_STEP:
        # Reset steps (dropped from the batch) get the true reward (0) and no shaping term.
        kept = np.zeros((N, T), bool)
        kept[batch.step("env").numpy(), batch.step("time").numpy()] = True
        assert np.all(shaped.T[~kept] == 0.0)


def test_single_env_wrapper_zeroes_potential_only_on_termination() -> None:
    env = PotentialShaping(gym.make("CartPole-v1", max_episode_steps=4), potential, GAMMA)
    obs, _ = env.reset(seed=1)
    rng = np.random.default_rng(1)
    seen_truncation = False
    for _ in range(200):
        phi = potential(np.asarray(obs)[None])[0]
        obs, reward, terminated, truncated, info = env.step(int(rng.integers(0, 2)))
        following = 0.0 if terminated else potential(np.asarray(obs)[None])[0]
        assert reward == pytest.approx(info["true_reward"] + GAMMA * following - phi)
        if terminated or truncated:
            seen_truncation |= truncated and not terminated
            obs, _ = env.reset()
    assert seen_truncation
