"""Wrappers that apply potential shaping online, for trainers we do not control (SB3, CleanRL).

Both keep the unshaped reward in ``info["true_reward"]`` and zero the potential only when an
episode *terminates*; on truncation the next state's potential is kept, as the offline transform
:func:`densereward.transforms.shape_potential` does — on the same transitions they give the same
rewards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper

Potential = Callable[[np.ndarray], np.ndarray]
"""Batched potential: observations ``[n, ...]`` -> ``[n]`` floats."""


class PotentialShaping(gym.Wrapper):
    """``r' = r + gamma * Phi(s') - Phi(s)`` on a single environment.

    >>> import gymnasium as gym
    >>> env = PotentialShaping(gym.make("CartPole-v1"), lambda obs: obs[:, 0] * 0 + 1.0, gamma=1.0)
    >>> _ = env.reset(seed=0)
    >>> _, reward, terminated, _, info = env.step(0)
    >>> reward, info["true_reward"]  # Phi is constant: gamma * 1 - 1 = 0 added
    (1.0, 1.0)
    """

    def __init__(self, env: gym.Env, potential: Potential, gamma: float) -> None:
        super().__init__(env)
        self.potential, self.gamma = potential, gamma
        self._phi = 0.0

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._phi = float(self.potential(np.asarray(obs)[None])[0])
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        following = 0.0 if terminated else float(self.potential(np.asarray(obs)[None])[0])
        shaped = float(reward) + self.gamma * following - self._phi
        self._phi = following
        return obs, shaped, terminated, truncated, {**info, "true_reward": reward}


class VectorPotentialShaping(VectorWrapper):
    """Potential shaping on a vector env, correct at autoreset and truncation boundaries.

    * same-step autoreset: at an episode's end the returned observation is already the next
      episode's first; the transition's ``s'`` is ``info["final_obs"]``.
    * next-step autoreset: the step after an episode's end only resets; it gets no shaping and
      re-anchors ``Phi(s)`` on the new first observation.
    """

    def __init__(self, env: VectorEnv, potential: Potential, gamma: float) -> None:
        super().__init__(env)
        self.potential, self.gamma = potential, gamma
        self.mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        self._phi = np.zeros(env.num_envs)
        self._resetting = np.zeros(env.num_envs, dtype=bool)

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._phi = np.asarray(self.potential(obs), dtype=np.float64)
        self._resetting[:] = False
        return obs, info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        reward = np.asarray(reward, dtype=np.float64)
        phi_obs = np.asarray(self.potential(obs), dtype=np.float64)
        done = terminated | truncated
        following = phi_obs.copy()
        if self.mode == AutoresetMode.SAME_STEP and done.any():
            final = np.stack([info["final_obs"][i] for i in np.flatnonzero(done)])
            following[done] = self.potential(final)
        following[terminated] = 0.0
        shaped = reward + self.gamma * following - self._phi
        if self.mode == AutoresetMode.NEXT_STEP:
            shaped[self._resetting] = reward[self._resetting]  # a reset step is no transition
            self._resetting = done
        # In both modes the agent next acts on `obs` (in same-step mode, after an episode's end,
        # that is already the next episode's first observation), so it anchors Phi(s).
        self._phi = phi_obs
        return obs, shaped, terminated, truncated, {**info, "true_reward": reward}
