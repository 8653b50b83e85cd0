from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from densereward import Trajectories, ValidationError
from densereward.core.layouts import (
    broadcast_to_tokens,
    from_padded,
    from_rollout_buffer,
    to_padded,
    to_rollout_buffer,
)


@st.composite
def padded(draw):
    rows, width = draw(st.integers(1, 6)), draw(st.integers(1, 10))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    layout = draw(st.sampled_from(["left", "right", "holes"]))
    lengths = rng.integers(1, width + 1, size=rows)
    mask = np.zeros((rows, width), dtype=np.int64)
    for r, n in enumerate(lengths):
        if layout == "left":
            mask[r, :n] = 1
        elif layout == "right":
            mask[r, width - n :] = 1
        else:
            mask[r, rng.choice(width, size=n, replace=False)] = 1
    dtype = draw(st.sampled_from([torch.float32, torch.int64, torch.bool]))
    return torch.from_numpy(rng.normal(size=(rows, width))), torch.from_numpy(mask).to(dtype)


@given(padded())
def test_padded_round_trip_is_exact(case) -> None:
    values, mask = case
    batch = from_padded({"reward": values}, mask)
    back, back_mask = to_padded(batch, batch.step("reward"), width=values.shape[1])
    assert torch.equal(back_mask, mask != 0)
    assert torch.equal(back[back_mask], values[mask != 0])
    assert bool((back[~back_mask] == 0).all())


@st.composite
def rollout(draw):
    time, envs = draw(st.integers(1, 12)), draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    mode = draw(st.sampled_from(["same_step", "next_step"]))
    status = rng.choice(3, size=(time, envs), p=[0.7, 0.15, 0.15])
    terminated, truncated = status == 1, status == 2
    rewards = rng.normal(size=(time, envs))
    previous_done = rng.random(envs) < 0.3
    if mode == "next_step":
        # Gymnasium's next-step autoreset: the step after an episode's end is a reset step with
        # reward 0 and no flags.
        for t in range(time):
            done_before = (terminated[t - 1] | truncated[t - 1]) if t else previous_done
            rewards[t, done_before] = 0.0
            terminated[t, done_before] = truncated[t, done_before] = False
    return (
        mode,
        torch.from_numpy(rewards),
        torch.from_numpy(terminated),
        torch.from_numpy(truncated),
        torch.from_numpy(previous_done),
    )


@given(rollout())
def test_rollout_buffer_round_trip_and_episode_boundaries(case) -> None:
    mode, rewards, terminated, truncated, previous_done = case
    batch = from_rollout_buffer(
        rewards, terminated, truncated, autoreset=mode, previous_done=previous_done
    )
    time, envs = rewards.shape
    assert torch.equal(to_rollout_buffer(batch, batch.step("reward"), time, envs), rewards)
    # Slow reference: walk each env's column and cut episodes by hand.
    expected = []
    for env in range(envs):
        current: list[int] = []
        reset_next = bool(previous_done[env]) if mode == "next_step" else False
        for t in range(time):
            if reset_next:
                reset_next = False
                continue
            current.append(t)
            if terminated[t, env] or truncated[t, env]:
                expected.append((env, current, bool(terminated[t, env]), bool(truncated[t, env])))
                current = []
                reset_next = mode == "next_step"
        if current:
            expected.append((env, current, False, False))
    assert len(batch) == len(expected)
    times = batch.to_episodes("time")
    for i, (env, steps, term, trunc) in enumerate(expected):
        assert times[i].tolist() == steps
        assert bool(batch.terminated[i]) == term and bool(batch.truncated[i]) == trunc
        assert set(batch.to_episodes("env")[i].tolist()) == {env}


def test_broadcast_to_tokens_matches_loop() -> None:
    spans = [[[0, 2], [3, 6]], [[1, 4]]]
    batch = Trajectories.from_episodes({"v": [[1.0, 2.0], [3.0]]}, token_spans=spans)
    out, mask = broadcast_to_tokens(batch, batch.step("v"), width=7)
    expected = torch.zeros(2, 7, dtype=torch.float64)
    values = [[1.0, 2.0], [3.0]]
    for row, row_spans in enumerate(spans):
        for (start, end), value in zip(row_spans, values[row], strict=True):
            expected[row, start:end] = value
    assert torch.equal(out, expected)
    assert torch.equal(mask, expected != 0)


def test_padded_width_too_small_is_an_error() -> None:
    batch = Trajectories.from_episodes({"v": [[1.0, 2.0, 3.0]]})
    with pytest.raises(ValidationError, match="too narrow"):
        to_padded(batch, batch.step("v"), width=2)


def test_terminated_and_truncated_together_count_as_terminated() -> None:
    # MiniGrid reports both when the goal is reached on the last allowed step.
    rewards = torch.tensor([[0.0], [1.0], [0.5]])
    terminated = torch.tensor([[False], [True], [False]])
    truncated = torch.tensor([[False], [True], [False]])
    batch = from_rollout_buffer(rewards, terminated, truncated)
    assert batch.terminated.tolist() == [True, False] and batch.truncated.tolist() == [False, False]
