"""Hypothesis strategies: ragged batches with groups, flags and every edge the estimators meet."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

from densereward import Trajectories


@st.composite
def lengths(draw, max_trajectories: int = 10, max_length: int = 12, long: bool = False):
    count = draw(st.integers(1, max_trajectories))
    top = max_length if not long else draw(st.sampled_from([max_length, 70, 140]))
    return draw(st.lists(st.integers(1, top), min_size=count, max_size=count))


@st.composite
def batches(
    draw,
    max_trajectories: int = 10,
    max_length: int = 12,
    long: bool = False,
    outcome: bool = True,
    equal_rewards: bool | None = None,
):
    """A float64 ``Trajectories`` with step columns reward, value, prm, kl, weight; per-trajectory
    outcome, group (possibly singletons), terminated/truncated and bootstrap_value."""
    sizes = draw(lengths(max_trajectories, max_length, long))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    count, total = len(sizes), sum(sizes)
    constant = draw(st.booleans()) if equal_rewards is None else equal_rewards
    reward = np.full(total, 0.5) if constant else rng.normal(size=total).round(3)
    groups = rng.integers(0, draw(st.integers(1, 4)), size=count)
    status = rng.integers(0, 3, size=count)  # 0 terminated, 1 truncated, 2 neither (buffer end)
    episodes = {
        "group": torch.from_numpy(groups),
        "terminated": torch.from_numpy(status == 0),
        "truncated": torch.from_numpy(status == 1),
        "bootstrap_value": torch.from_numpy(rng.normal(size=count)),
    }
    if outcome:
        values = np.full(count, 1.0) if constant else rng.integers(0, 2, size=count).astype(float)
        episodes["outcome"] = torch.from_numpy(values)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    steps = {
        "reward": torch.from_numpy(reward),
        "value": torch.from_numpy(rng.normal(size=total)),
        "prm": torch.from_numpy(rng.uniform(0, 1, size=total)),
        "kl": torch.from_numpy(rng.normal(scale=0.1, size=total)),
        "weight": torch.from_numpy(rng.uniform(0, 2, size=total)),
    }
    return Trajectories(torch.from_numpy(offsets), steps, episodes)


@st.composite
def trees(draw, max_trajectories: int = 8, max_length: int = 5):
    """A rollout tree: each trajectory branches off a random earlier step (or is a root)."""
    sizes = draw(lengths(max_trajectories, max_length))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    parents: list[list[int]] = []
    start = 0
    for size in sizes:
        branch = int(rng.integers(-1, start)) if start > 0 and rng.random() < 0.7 else -1
        parents.append([branch, *range(start, start + size - 1)])
        start += size
    count = len(sizes)
    return Trajectories.from_episodes(
        {"reward": [rng.normal(size=s).round(3) for s in sizes]},
        {
            "outcome": rng.integers(0, 2, size=count).astype(float),
            "group": rng.integers(0, 2, size=count),
        },
        parent=parents,
    )


def episodes_of(batch: Trajectories, name: str) -> list[np.ndarray]:
    return [e.numpy() for e in batch.to_episodes(name)]
