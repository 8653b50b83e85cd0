"""Environment construction: MiniGrid with image observations, or any Gymnasium id."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from densereward.core.errors import ConfigError


class GoalSuccess(gym.Wrapper):
    """Puts ``is_success`` in the info of an episode's last step, as Gymnasium-Robotics does:
    MiniGrid's goal terminates the episode with a positive reward; a time-limit truncation or a
    termination without reward (lava) is no success."""

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            info = {**info, "is_success": bool(terminated and float(reward) > 0)}
        return obs, reward, terminated, truncated, info


def make_env(env_id: str, render_mode: str | None = None) -> gym.Env:
    """One environment; MiniGrid ids get their egocentric image as the observation and report
    ``is_success`` (``GoalSuccess``)."""
    if env_id.startswith("MiniGrid-"):
        import minigrid  # noqa: F401  (registers the MiniGrid ids)
        from minigrid.wrappers import ImgObsWrapper

        try:
            return GoalSuccess(ImgObsWrapper(gym.make(env_id, render_mode=render_mode)))
        except gym.error.Error as error:
            raise ConfigError("world.env_id", str(error).splitlines()[0]) from None
    try:
        return gym.make(env_id, render_mode=render_mode)
    except gym.error.Error as error:
        raise ConfigError("world.env_id", str(error).splitlines()[0]) from None


def make_vector_env(
    env_id: str, num_envs: int, autoreset: AutoresetMode = AutoresetMode.SAME_STEP
) -> SyncVectorEnv:
    """``num_envs`` copies in one process, with the given autoreset mode (same-step by default:
    the final observation of an episode arrives in ``info["final_obs"]``)."""
    thunks: list[Callable[[], gym.Env]] = [lambda: make_env(env_id) for _ in range(num_envs)]
    return SyncVectorEnv(thunks, autoreset_mode=autoreset)
