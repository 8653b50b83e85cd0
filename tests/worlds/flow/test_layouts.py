"""Flow trajectories round-trip through every ``Trajectories`` layout."""

from __future__ import annotations

from pathlib import Path

import torch

from densereward.core.layouts import from_padded, from_rollout_buffer, to_padded, to_rollout_buffer
from densereward.core.trajectories import Trajectories
from densereward.io.jsonl import read_jsonl, write_jsonl
from densereward.io.parquet import read_parquet, write_parquet
from densereward.worlds.flow.world import FlowSetup
from tests.worlds.flow.test_rewards import rollout

STEP_COLUMNS = ("reward", "kl", "state", "next_state", "step_index")
EPISODE_COLUMNS = ("outcome", "gold", "proxy", "group", "prompt")


def assert_same(a: Trajectories, b: Trajectories, steps=STEP_COLUMNS, episodes=EPISODE_COLUMNS):
    assert torch.equal(a.offsets, b.offsets)
    for name in steps:
        torch.testing.assert_close(b.step(name), a.step(name), check_dtype=False)
    for name in episodes:
        torch.testing.assert_close(b.episode(name), a.episode(name), check_dtype=False)


def test_list_of_episodes(flow_setup: FlowSetup) -> None:
    batch = rollout(flow_setup, 1)
    again = Trajectories.from_episodes(
        {name: batch.to_episodes(name) for name in STEP_COLUMNS},
        {name: batch.episode(name) for name in EPISODE_COLUMNS},
    )
    assert_same(batch, again)


def test_padded_batch_by_steps(flow_setup: FlowSetup) -> None:
    batch = rollout(flow_setup, 2)
    columns, masks = {}, []
    for name in STEP_COLUMNS:
        columns[name], mask = to_padded(batch, batch.step(name))
        masks.append(mask)
    assert all(torch.equal(m, masks[0]) for m in masks) and bool(masks[0].all())
    again = from_padded(columns, masks[0], {n: batch.episode(n) for n in EPISODE_COLUMNS})
    assert_same(batch, again)


def test_time_by_environments_rollout_buffer(flow_setup: FlowSetup) -> None:
    batch = rollout(flow_setup, 3)
    n, steps = len(batch), int(batch.lengths[0])
    terminated = torch.zeros(steps, n, dtype=torch.bool)
    terminated[-1] = True  # a denoising trajectory terminates at t = 0
    columns = {}
    time = torch.arange(steps).repeat(n)
    env = torch.arange(n).repeat_interleave(steps)
    cells = batch.with_steps(env=env, time=time)
    for name in STEP_COLUMNS:
        columns[name] = to_rollout_buffer(cells, batch.step(name), steps, n)
    rewards = columns.pop("reward")
    again = from_rollout_buffer(rewards, terminated, torch.zeros_like(terminated), columns)
    assert_same(batch, again, episodes=())
    assert bool(again.terminated.all())


def test_parquet_and_jsonl_files(flow_setup: FlowSetup, tmp_path: Path) -> None:
    batch = rollout(flow_setup, 4)
    write_parquet(batch, tmp_path / "flow.parquet")
    assert_same(batch, read_parquet(tmp_path / "flow.parquet"))
    write_jsonl(batch, tmp_path / "flow.jsonl")
    assert_same(batch, read_jsonl(tmp_path / "flow.jsonl"))
