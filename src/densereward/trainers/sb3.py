"""Stable-Baselines3 adapter: train any SB3 algorithm on densereward rewards, unchanged.

:class:`DenseRewardVecEnv` wraps an SB3 ``VecEnv`` and replaces each step's reward with the
reward pipeline's — its signals and transforms, applied online to the step's transitions, one
length-1 trajectory per env: step columns ``obs``, ``action``, ``reward`` and per-trajectory
``final_obs`` (the true next observation, ``infos[i]["terminal_observation"]`` at an episode's
end), ``terminated`` and ``truncated`` (SB3's ``TimeLimit.truncated``). Potential shaping and
per-step bonuses work this way; transforms that need other steps of the episode (Delta, return
decomposition, group normalisation) do not, and belong in an offline pipeline. The environment's
own reward stays in ``infos[i]["true_reward"]``.

SB3's on-policy algorithms add ``gamma * V(terminal_observation)`` to the reward of a time-limit
truncation when they store it (their timeout bootstrap). That agrees with potential shaping here,
which keeps ``Phi(s')`` at truncations, so the two compose correctly.

SB3 is optional: ``pip install stable-baselines3``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

try:
    from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
except ImportError as error:  # pragma: no cover - exercised only without SB3
    raise ImportError(
        "the SB3 adapter needs stable-baselines3: pip install stable-baselines3"
    ) from error

from densereward.core.trajectories import Trajectories
from densereward.pipeline import Pipeline


class DenseRewardVecEnv(VecEnvWrapper):
    """An SB3 ``VecEnvWrapper`` whose rewards come from a densereward pipeline."""

    def __init__(self, venv: VecEnv, pipeline: Pipeline, reward: str = "reward") -> None:
        super().__init__(venv)
        self.pipeline, self.reward = pipeline, reward
        self._obs: Any = None
        self._actions: np.ndarray | None = None
        self.iteration = 0

    def close(self) -> None:
        self.venv.close()
        self.pipeline.close()

    def reset(self) -> Any:
        self._obs = self.venv.reset()
        return self._obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)
        self.venv.step_async(actions)

    def step_wait(self) -> Any:
        obs, rewards, dones, infos = self.venv.step_wait()
        assert self._obs is not None and self._actions is not None, "reset() before step()"
        n = len(rewards)
        truncated = (
            np.array([bool(info.get("TimeLimit.truncated", False)) for info in infos]) & dones
        )
        terminated = dones & ~truncated
        final = np.array(obs, copy=True)
        for index in np.flatnonzero(dones).tolist():
            final[index] = infos[index]["terminal_observation"]
        batch = Trajectories(
            torch.arange(n + 1),
            {
                "obs": torch.from_numpy(np.asarray(self._obs)),
                "action": torch.from_numpy(self._actions),
                "reward": torch.from_numpy(np.asarray(rewards, dtype=np.float64)),
            },
            {
                "final_obs": torch.from_numpy(final),
                "terminated": torch.from_numpy(terminated),
                "truncated": torch.from_numpy(truncated),
            },
            trusted=True,
        )
        shaped, _ = self.pipeline.transform(batch, self.iteration, dtype=torch.float32)
        for i, info in enumerate(infos):
            info["true_reward"] = float(rewards[i])
        self._obs = obs
        return obs, shaped.step(self.reward).numpy().astype(np.float32), dones, infos
