"""SB3 trains unchanged on densereward rewards; the rewards it sees equal the offline pipeline's."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")

from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnvWrapper

from densereward import Trajectories
from densereward.core.components import Signal
from densereward.core.layouts import from_rollout_buffer
from densereward.core.registry import register
from densereward.pipeline import Pipeline, Recipe
from densereward.trainers.sb3 import DenseRewardVecEnv


@register("signal", "test_cart_potential", paper="(test)")
@dataclass(frozen=True)
class CartPotential(Signal):
    """Phi(s) = 3 x + theta + 1 for CartPole."""

    def __call__(self, batch: Trajectories, name: str) -> Trajectories:
        def phi(obs: torch.Tensor) -> torch.Tensor:
            obs = obs.double()
            return 3.0 * obs[:, 0] + obs[:, 2] + 1.0

        return batch.with_steps(**{name: phi(batch.step("obs"))}).with_episodes(
            **{f"final_{name}": phi(batch.episode("final_obs"))}
        )


RECIPE = {
    "signals": {"potential": {"kind": "test_cart_potential"}},
    "transforms": [{"kind": "potential", "potential": "potential", "gamma": 0.9}],
    "estimator": {"kind": "gae"},
}


class Recorder(VecEnvWrapper):
    """Records what the inner env did, below the densereward wrapper."""

    def __init__(self, venv) -> None:
        super().__init__(venv)
        self.obs, self.rows = None, []

    def reset(self):
        self.obs = self.venv.reset()
        return self.obs

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        final = np.array(obs, copy=True)
        for i in np.flatnonzero(dones):
            final[i] = infos[i]["terminal_observation"]
        truncated = np.array([info.get("TimeLimit.truncated", False) for info in infos]) & dones
        self.rows.append(
            (self.obs, rewards.astype(np.float64), dones & ~truncated, truncated, final)
        )
        self.obs = obs
        return obs, rewards, dones, infos


def test_sb3_ppo_trains_on_exactly_the_pipeline_rewards() -> None:
    inner = Recorder(
        make_vec_env("CartPole-v1", n_envs=2, seed=0, env_kwargs={"max_episode_steps": 12})
    )
    env = DenseRewardVecEnv(inner, Pipeline(Recipe.from_dict(RECIPE)))
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=128)
    # SB3's rollout buffer holds the rewards of the last rollout: the final 64 steps recorded.
    rows = inner.rows[-64:]
    obs, rewards, terminated, truncated, final = (np.stack(x) for x in zip(*rows, strict=True))
    assert terminated.any() and truncated.any()
    batch = from_rollout_buffer(
        torch.from_numpy(rewards),
        torch.from_numpy(terminated),
        torch.from_numpy(truncated),
        autoreset="same_step",
        columns={"obs": torch.from_numpy(obs), "final_obs": torch.from_numpy(final)},
    )
    batch = batch.with_episodes(final_obs=batch.step("final_obs")[batch.segments.last])
    offline, _ = Pipeline(Recipe.from_dict(RECIPE)).transform(batch)
    expected = np.zeros((64, 2))
    expected[batch.step("time").numpy(), batch.step("env").numpy()] = offline.step("reward").numpy()
    # SB3's PPO adds gamma * V(terminal_observation) to the reward of a time-limit truncation when
    # it stores the step (its own bootstrap); every other step holds exactly the pipeline's reward.
    buffered = model.rollout_buffer.rewards
    np.testing.assert_allclose(buffered[~truncated], expected[~truncated], rtol=1e-5, atol=1e-5)
    assert not np.allclose(buffered[truncated], expected[truncated])
