from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from densereward.worlds.control.rollouts import collect_rollouts


def policy(obs: np.ndarray) -> np.ndarray:
    # Deterministic; balances the pole only sometimes, so episodes both terminate and time out.
    return (obs[:, 2] > 0).astype(np.int64) ^ (np.abs(obs[:, 0]) > 0.05)


def complete_episodes(batch, env: int) -> list[tuple]:
    out = []
    envs = [e[0].item() for e in batch.to_episodes("env")]
    for i, (obs, reward) in enumerate(
        zip(batch.to_episodes("obs"), batch.to_episodes("reward"), strict=True)
    ):
        if envs[i] == env and (batch.terminated[i] or batch.truncated[i]):
            out.append(
                (
                    obs.numpy().round(6).tobytes(),
                    reward.tolist(),
                    bool(batch.terminated[i]),
                    batch.episodes["final_obs"][i].numpy().round(6).tobytes(),
                )
            )
    return out


def test_both_autoreset_modes_collect_the_same_episodes() -> None:
    collected = {}
    for mode in (AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP):
        envs = SyncVectorEnv(
            [lambda: gym.make("CartPole-v1", max_episode_steps=20) for _ in range(2)],
            autoreset_mode=mode,
        )
        collected[mode] = collect_rollouts(envs, policy, 120, seed=7)
    same, following = collected[AutoresetMode.SAME_STEP], collected[AutoresetMode.NEXT_STEP]
    for env in (0, 1):
        a, b = complete_episodes(same, env), complete_episodes(following, env)
        shared = min(len(a), len(b))
        assert shared >= 3 and a[:shared] == b[:shared]
    # Next-step autoreset spends one step per episode on the reset, which is dropped.
    assert following.num_steps < same.num_steps
    assert bool(same.truncated.any()) and bool(same.terminated.any())
    assert torch.equal(same.step("action"), torch.from_numpy(policy(same.step("obs").numpy())))
