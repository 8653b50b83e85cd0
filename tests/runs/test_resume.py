"""Crash-safe runs: each finished (method, seed) is committed as it finishes, and a run killed at
any moment, then run again with the same folder, ends with the folder an uninterrupted run
writes (runs are deterministic per seed)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from densereward.core.errors import ConfigError, Interrupted
from densereward.runs import RunRecipe, execute
from densereward.runs.executor import MethodRun
from densereward.runs.folder import RunFolder
from tests.runs.test_third_world import RECIPE, plugin_environment

ROOT = Path(__file__).resolve().parents[2]
WALL_CLOCK = ("seconds", "steps_per_second")


def recipe(updates: int = 30) -> RunRecipe:
    return RunRecipe.from_dict(yaml.safe_load(RECIPE.replace("updates: 30", f"updates: {updates}")))


def metrics(folder: Path) -> list[dict[str, object]]:
    rows = pq.read_table(folder / "metrics.parquet").to_pylist()
    return [{k: v for k, v in row.items() if k not in WALL_CLOCK} for row in rows]


def evaluations(folder: Path) -> list[dict[str, object]]:
    return pq.read_table(folder / "evaluation.parquet").to_pylist()


def checkpoints(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "checkpoints").iterdir())}


def test_an_interrupted_run_resumes_without_redoing_its_finished_pairs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = execute(recipe(), tmp_path / "whole", local=True, progress=False)
    out = tmp_path / "run"
    commits: list[tuple[str, int]] = []
    original = RunFolder.commit

    def commit_then_interrupt(self: RunFolder, key: tuple[str, int], run: MethodRun) -> None:
        original(self, key, run)
        commits.append(key)
        if len(commits) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunFolder, "commit", commit_then_interrupt)
    with pytest.raises(Interrupted, match=rf"2 of 4 runs are committed to {out}.*--resume"):
        execute(recipe(), out, local=True, progress=False)
    assert not (out / "report.md").exists()
    assert sorted(p.name for p in (out / "pairs").glob("*.json")) == [
        f"{m}-seed{s}.json" for m, s in sorted(commits)
    ]
    monkeypatch.setattr(
        RunFolder, "commit", lambda self, key, run: commits.append(key) or original(self, key, run)
    )
    execute(recipe(), resume=out, local=True, progress=False)
    assert len(commits) == 4 and len(set(commits)) == 4  # the two finished pairs were not rerun
    assert metrics(out) == metrics(whole)
    assert evaluations(out) == evaluations(whole)
    assert checkpoints(out) == checkpoints(whole)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["execution"]["resumed_with"] == 2


def test_the_folder_refuses_what_it_must_not_resume(tmp_path: Path) -> None:
    finished = execute(recipe(3), tmp_path / "finished", local=True, progress=False)
    with pytest.raises(ConfigError, match="holds a finished run"):
        execute(recipe(3), finished, local=True, progress=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not a run folder"):
        execute(recipe(3), other, local=True, progress=False)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    with pytest.raises(ConfigError, match=r"--resume: .*missing: no such run folder"):
        execute(recipe(3), resume=tmp_path / "missing", local=True, progress=False)
    started = tmp_path / "started"
    RunFolder.open(started, recipe(3)).close()
    with pytest.raises(ConfigError, match=r"different recipe \(trainer\.updates: 3 then, 4 now\)"):
        execute(recipe(4), started, local=True, progress=False)


def test_what_a_kill_leaves_half_written_is_removed(tmp_path: Path) -> None:
    out = tmp_path / "run"
    stale = tmp_path / ".run.abc123.staging"  # killed between mkdtemp and its rename
    stale.mkdir()
    (stale / "recipe.yaml").write_text("x")
    folder = RunFolder.open(out, recipe(3))
    assert not stale.exists()
    with pytest.raises(ConfigError, match="is being written by another densereward run"):
        RunFolder.open(out, recipe(3))
    folder.close()
    (out / "pairs" / ".grpo-seed0.json.x1.tmp.json").write_text("{")  # killed mid-write
    (out / "checkpoints" / "grpo-seed0.pt").write_bytes(b"half")  # its record never landed
    reopened = RunFolder.open(out, folder.recipe)
    assert reopened.finished() == {}
    assert list(out.rglob("*.tmp*")) == [] and not (out / "checkpoints" / "grpo-seed0.pt").exists()


def _densereward(*args: str | Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    executable = Path(sys.executable).with_name("densereward")
    return subprocess.Popen(
        [str(executable), *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )


def test_a_run_killed_at_random_moments_ends_with_the_uninterrupted_numbers(
    tmp_path: Path,
) -> None:
    env = plugin_environment(tmp_path)
    path = tmp_path / "bandit.yaml"
    path.write_text(RECIPE.replace("updates: 30", "updates: 4000"))
    started = time.perf_counter()
    whole = tmp_path / "whole"
    first = _densereward("run", path, "--out", whole, "--local", env=env)
    assert first.wait(timeout=300) == 0, first.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
    duration = time.perf_counter() - started
    out, rng, kills = tmp_path / "killed", random.Random(13), 0
    for attempt in range(12):
        process = _densereward("run", path, "--out", out, "--local", env=env)
        if attempt < 5:
            time.sleep(rng.uniform(0.2, 0.7) * duration)
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                kills += 1
        code = process.wait(timeout=300)
        if code == 0 or (out / "report.md").exists():
            break
    assert kills >= 3, "the run finished before it could be killed: make it longer"
    assert (out / "report.md").exists(), process.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
    assert metrics(out) == metrics(whole)
    assert evaluations(out) == evaluations(whole)
    assert checkpoints(out) == checkpoints(whole)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert list(out.rglob(".*")) == []


def test_killing_the_driver_of_a_ray_run_leaves_no_ray_process_behind(tmp_path: Path) -> None:
    import psutil
    import ray  # noqa: F401  (Ray bundles psutil)

    env = plugin_environment(tmp_path)
    path = tmp_path / "bandit.yaml"
    path.write_text(RECIPE.replace("updates: 30", "updates: 100000"))
    process = _densereward("run", path, "--out", tmp_path / "run", "--no-local", env=env)
    driver, seen = psutil.Process(process.pid), {}
    deadline = time.monotonic() + 120
    # wait until a worker runs a job: the whole instance is up, agents included
    while time.monotonic() < deadline and not any(
        "remote_job" in " ".join(_cmdline(p, psutil)) for p in _alive(seen.values(), psutil)
    ):
        for child in driver.children(recursive=True):
            seen.setdefault(child.pid, child)
        time.sleep(0.2)
    assert process.poll() is None, process.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
    assert any("raylet" in " ".join(_cmdline(p, psutil)) for p in seen.values())
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _alive(seen.values(), psutil):
        time.sleep(0.5)
    left = [" ".join(_cmdline(p, psutil))[:80] for p in _alive(seen.values(), psutil)]
    assert left == []


def _cmdline(process: object, psutil: object) -> list[str]:
    try:
        return process.cmdline()  # type: ignore[attr-defined,no-any-return]
    except psutil.Error:  # type: ignore[attr-defined]
        return []


def _alive(processes: object, psutil: object) -> list[object]:
    out = []
    for process in processes:  # type: ignore[attr-defined]
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:  # type: ignore[attr-defined]
                out.append(process)
        except psutil.Error:  # type: ignore[attr-defined]
            continue
    return out
