from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from densereward import Trajectories, ValidationError, read_trajectories, write_trajectories
from tests.strategies import batches, trees


def assert_same(a: Trajectories, b: Trajectories) -> None:
    assert torch.equal(a.offsets, b.offsets)
    assert a.steps.keys() == b.steps.keys() and a.episodes.keys() == b.episodes.keys()
    for name in a.steps:
        assert torch.equal(a.steps[name], b.steps[name]), name
        assert a.steps[name].dtype == b.steps[name].dtype
    for name in a.episodes:
        assert torch.equal(a.episodes[name], b.episodes[name]), name
    for x, y in ((a.token_spans, b.token_spans), (a.parent, b.parent)):
        assert (x is None and y is None) or torch.equal(x, y)
    assert a.text == b.text and a.step_text == b.step_text


files = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=25)


@files
@given(batch=batches())
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_file_round_trip_is_exact(tmp_path: Path, suffix: str, batch: Trajectories) -> None:
    path = tmp_path / f"batch{suffix}"
    write_trajectories(batch, path)
    assert_same(read_trajectories(path), batch)


@files
@given(batch=trees())
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_trees_spans_and_text_round_trip(tmp_path: Path, suffix: str, batch: Trajectories) -> None:
    spans = torch.stack([batch.segments.positions * 3, batch.segments.positions * 3 + 2], 1)
    batch = Trajectories(
        batch.offsets,
        batch.steps,
        batch.episodes,
        spans,
        batch.parent,
        {"prompt": [f"q{i} ∑" for i in range(len(batch))]},
        {"step": [f"s{j}" for j in range(batch.num_steps)]},
    )
    path = tmp_path / f"tree{suffix}"
    write_trajectories(batch, path)
    assert_same(read_trajectories(path), batch)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_trl_stepwise_round_trip(tmp_path: Path, suffix: str) -> None:
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"prompt": "2+2?", "completions": ["2+2=4", "so 4"], "labels": [True, True]},
        {"prompt": "3*3?", "completions": ["3*3=6"], "labels": [False]},
    ]
    source = tmp_path / f"trl{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), source)
    else:
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    batch = read_trajectories(source)
    assert batch.step("label").tolist() == [1.0, 1.0, 0.0]
    assert batch.step_text["completion"] == ["2+2=4", "so 4", "3*3=6"]
    target = tmp_path / f"back{suffix}"
    write_trajectories(batch, target, format="trl")
    again = read_trajectories(target, format="trl")
    assert_same(again, batch)
    if suffix == ".jsonl":
        assert [json.loads(line) for line in target.read_text().splitlines()] == rows


def test_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"steps": {"r": [1.0]}}\n\n{"steps": {"r": [1.0, NaN]}}\n')
    with pytest.raises(ValidationError) as caught:
        read_trajectories(path)
    assert caught.value.line == 3 and caught.value.field == "steps.r" and caught.value.step == 1


def test_written_file_has_default_permissions_and_no_temporary_left(tmp_path: Path) -> None:
    import os
    import stat

    batch = Trajectories.from_episodes({"r": [[1.0]]})
    path = tmp_path / "out.jsonl"
    write_trajectories(batch, path)
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
