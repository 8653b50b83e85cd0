"""Heuristic rewards for MiniGrid, written as batched reward functions
``R(obs, act, next_obs, terminated, truncated)`` for the ``reward_function`` signal."""

from __future__ import annotations

import numpy as np

KEY = 5  # MiniGrid's object id for a key
AGENT_CELL = (3, 6)  # where the agent sits in its 7x7 egocentric view; it shows what it carries


def carrying_key(next_obs: np.ndarray) -> np.ndarray:
    return next_obs[:, AGENT_CELL[0], AGENT_CELL[1], 0] == KEY


def key_bonus(obs, act, next_obs, terminated, truncated) -> np.ndarray:
    """Helpful: 0.01 per step while carrying the key (DoorKey needs it)."""
    return 0.01 * carrying_key(next_obs)


def misleading_no_key(obs, act, next_obs, terminated, truncated) -> np.ndarray:
    """Misleading: 0.01 per step while *not* carrying the key — over 250 steps that is worth more
    than the success reward, so simply adding it teaches the agent to leave the key alone."""
    return 0.01 * ~carrying_key(next_obs)
