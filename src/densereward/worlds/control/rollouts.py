"""Collect vectorized Gymnasium rollouts into ``Trajectories``, in either autoreset mode."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv

from densereward.core.layouts import from_rollout_buffer
from densereward.core.trajectories import Trajectories


def collect_rollouts(
    envs: VectorEnv,
    policy: Callable[[np.ndarray], np.ndarray],
    num_steps: int,
    seed: int | None = None,
) -> Trajectories:
    """Run ``policy`` for ``num_steps`` vector steps from a reset; return the episodes.

    Steps carry ``obs``, ``action`` and ``reward`` (plus ``env``/``time``); each trajectory carries
    ``final_obs``, the true observation after its last step, and keeps terminated and truncated
    apart. Works in both autoreset modes: with same-step autoreset the final observation comes
    from ``info["final_obs"]``; with next-step autoreset the step after an episode's end only
    resets the env and is dropped.
    """
    mode = envs.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    obs, _ = envs.reset(seed=seed)
    num_envs = envs.num_envs
    observations, next_observations = [], []
    actions, rewards, terminated, truncated = [], [], [], []
    for _ in range(num_steps):
        action = np.asarray(policy(obs))
        following, reward, term, trunc, info = envs.step(action)
        after = np.array(following, copy=True)
        if mode == AutoresetMode.SAME_STEP:
            for i in np.flatnonzero(term | trunc):
                after[i] = info["final_obs"][i]
        observations.append(obs)
        next_observations.append(after)
        actions.append(action)
        rewards.append(np.asarray(reward, dtype=np.float64))
        terminated.append(term)
        truncated.append(trunc)
        obs = following
    batch = from_rollout_buffer(
        torch.from_numpy(np.stack(rewards)),
        torch.from_numpy(np.stack(terminated)),
        torch.from_numpy(np.stack(truncated)),
        columns={
            "obs": torch.from_numpy(np.stack(observations)),
            "action": torch.from_numpy(np.stack(actions)),
            "final_obs": torch.from_numpy(np.stack(next_observations)),
        },
        autoreset="same_step" if mode == AutoresetMode.SAME_STEP else "next_step",
        previous_done=torch.zeros(num_envs, dtype=torch.bool),
    )
    final = batch.step("final_obs")[batch.segments.last]
    steps = {k: v for k, v in batch.steps.items() if k != "final_obs"}
    return Trajectories(batch.offsets, steps, {**batch.episodes, "final_obs": final}, trusted=True)
