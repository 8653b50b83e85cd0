"""Resumable labeling jobs: the engine (shards, manifest, atomic commits, recovery) with a cheap
labeler, the reasoning world's rollouts files and labels, and the real ``densereward label``
killed with SIGKILL at random moments and rerun until it finishes."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from densereward.core.errors import ConfigError, DenseRewardError, ValidationError
from densereward.labeling.jobs import (
    JobInterrupted,
    LabeledShard,
    LabelJob,
    Shard,
    encode_shard,
    job_records,
    read_labels,
    read_manifest,
    run_label_job,
    shard_seed,
)
from densereward.labeling.mc import Prover, monte_carlo_labels
from densereward.worlds.reasoning.label_job import (
    Rollout,
    label_steps,
    load_model,
    read_rollouts,
    write_rollouts,
)
from densereward.worlds.reasoning.rollouts import policy_prompt
from densereward.worlds.reasoning.tasks import STEP_TAG, grade, parse_response, tag_aligned
from densereward.worlds.reasoning.tokenizer import build_tokenizer
from tests.reasoning_fixtures import problems

# --------------------------------------------------------------------------- the engine


@dataclass
class Draws:
    """A cheap labeler: row ``r`` of a shard gets a uniform draw from the shard's seed; it logs
    which shards it labelled and can be told to be interrupted at one."""

    log: list[int] = field(default_factory=list)
    interrupt_at: int | None = None

    def __call__(self, shard: Shard) -> LabeledShard:
        if shard.index == self.interrupt_at:
            raise KeyboardInterrupt
        self.log.append(shard.index)
        rows = np.arange(shard.start, shard.stop)
        draws = np.random.default_rng(shard.seed).random(len(rows))
        return LabeledShard(pa.table({"row": rows, "label": draws}), generated_tokens=len(rows))


def draws_job(labeler: Draws | None = None, **changes: object) -> LabelJob:
    labeler = labeler if labeler is not None else Draws()
    given: dict[str, object] = {"spec": {"labels": "draws"}, "rows": 23, "shard_size": 5}
    given.update(changes)
    return LabelJob(labeler=lambda: labeler, **given)  # type: ignore[arg-type]


def run_local(job: LabelJob, out: Path):
    return run_label_job(job, out, local=True, progress=False)


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").iterdir())}


def test_job_labels_every_row_once_in_order_with_seeded_shards(tmp_path: Path) -> None:
    job = draws_job()
    summary = run_local(job, tmp_path)
    assert (summary.shards, summary.committed, summary.computed, summary.labels) == (5, 5, 5, 23)
    assert summary.complete and summary.generated_tokens == 23
    table = read_labels(tmp_path)
    assert table.column("row").to_pylist() == list(range(23))
    expected = np.concatenate(
        [np.random.default_rng(shard_seed(0, k)).random(5 if k < 4 else 3) for k in range(5)]
    )
    assert np.array_equal(table.column("label").to_numpy(), expected)
    manifest = read_manifest(tmp_path)
    assert manifest["complete"] and manifest["job"] == job.hash and manifest["labels"] == 23
    assert [r.rows for r in job_records(tmp_path)] == [5, 5, 5, 5, 3]
    metadata = pq.read_schema(tmp_path / "shards" / "part-00003.parquet").metadata
    assert metadata[b"densereward.job"] == job.hash.encode()
    assert metadata[b"densereward.shard"] == b"3"


def test_a_shard_is_the_same_whichever_run_labels_it(tmp_path: Path) -> None:
    job = draws_job()
    run_local(job, tmp_path)
    for shard in job.shards():
        record, data = encode_shard(Draws(), job.hash, shard)  # a fresh worker, alone
        assert data == (tmp_path / "shards" / f"part-{shard.index:05d}.parquet").read_bytes()
        assert record.sha256 == job_records(tmp_path)[shard.index].sha256
    other = draws_job(seed=1)  # another job seed: other draws
    first = encode_shard(Draws(), other.hash, other.shards()[0])[1]
    labels = pq.read_table(pa.BufferReader(first)).column("label").to_pylist()
    assert labels != read_labels(tmp_path).column("label").to_pylist()[:5]


def test_interrupted_job_resumes_where_it_stopped_and_matches_an_uninterrupted_one(
    tmp_path: Path,
) -> None:
    reference = tmp_path / "reference"
    run_local(draws_job(), reference)
    out = tmp_path / "out"
    with pytest.raises(JobInterrupted, match="2 of 5 shards committed; rerun"):
        run_local(draws_job(Draws(interrupt_at=2)), out)
    assert [r.index for r in job_records(out)] == [0, 1]
    assert not read_manifest(out)["complete"]
    with pytest.raises(ValidationError, match="job incomplete: 2 of 5"):
        read_labels(out)
    assert read_labels(out, allow_partial=True).num_rows == 10
    resumed = Draws()
    summary = run_local(draws_job(resumed), out)
    assert resumed.log == [2, 3, 4]
    assert (summary.computed, summary.committed, summary.generated_tokens) == (3, 5, 13)
    assert shard_bytes(out) == shard_bytes(reference)
    assert read_labels(out).equals(read_labels(reference))
    again = Draws()
    assert run_local(draws_job(again), out).computed == 0 and again.log == []


def test_rerun_deletes_temporary_files_a_killed_run_left(tmp_path: Path) -> None:
    run_local(draws_job(), tmp_path)
    stray = [
        tmp_path / "shards" / ".part-00004.parquet.k1ll3d.tmp",
        tmp_path / ".manifest.json.k1ll3d.tmp",
    ]
    for path in stray:
        path.write_bytes(b"half a file")
    run_local(draws_job(), tmp_path)
    assert not any(p.exists() for p in stray)
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        f"part-{k:05d}.parquet" for k in range(5)
    ]


def test_shard_file_the_manifest_missed_is_adopted_without_labelling_it_again(
    tmp_path: Path,
) -> None:
    """A kill between the shard's ``os.replace`` and the manifest's leaves a complete file the
    manifest does not list: its metadata names this job and shard, so it is adopted."""
    run_local(draws_job(), tmp_path)
    before = shard_bytes(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["committed"] = [r for r in manifest["committed"] if r["index"] not in (1, 4)]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    labeler = Draws()
    summary = run_local(draws_job(labeler), tmp_path)
    assert labeler.log == [] and summary.adopted == 2 and summary.computed == 0
    assert summary.complete and shard_bytes(tmp_path) == before
    assert [r.index for r in job_records(tmp_path)] == [0, 1, 2, 3, 4]


def test_missing_changed_or_foreign_shard_files_are_labelled_again(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    run_local(draws_job(), reference)
    out = tmp_path / "out"
    run_local(draws_job(), out)
    shards = out / "shards"
    (shards / "part-00000.parquet").unlink()  # committed, then lost
    (shards / "part-00002.parquet").write_bytes(b"not parquet")  # committed, then changed
    # a complete file of another job under a name the manifest does not list
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["committed"] = [r for r in manifest["committed"] if r["index"] != 3]
    (out / "manifest.json").write_text(json.dumps(manifest))
    foreign = draws_job(seed=7)
    (shards / "part-00003.parquet").write_bytes(
        encode_shard(Draws(), foreign.hash, foreign.shards()[3])[1]
    )
    # committed, then overwritten by a readable file of this job and shard with other labels
    job = draws_job()
    shard = job.shards()[4]
    reseeded = Shard(shard.index, shard.start, shard.stop, shard.seed + 1)
    (shards / "part-00004.parquet").write_bytes(
        encode_shard(lambda _: Draws()(reseeded), job.hash, shard)[1]
    )
    labeler = Draws()
    summary = run_local(draws_job(labeler), out)
    assert sorted(labeler.log) == [0, 2, 3, 4]
    assert (summary.repaired, summary.adopted) == (3, 0)
    assert shard_bytes(out) == shard_bytes(reference)
    (shards / "part-00001.parquet").write_bytes(b"tampered")
    with pytest.raises(ValidationError, match="missing or changed"):
        read_labels(out)


@pytest.mark.parametrize(
    "changes", [{"spec": {"labels": "other"}}, {"seed": 1}, {"shard_size": 4}, {"rows": 24}]
)
def test_a_different_job_in_the_same_folder_is_refused(tmp_path: Path, changes: dict) -> None:
    run_local(draws_job(), tmp_path)
    before = shard_bytes(tmp_path)
    with pytest.raises(ConfigError, match="holds another labeling job"):
        run_local(draws_job(**changes), tmp_path)
    assert shard_bytes(tmp_path) == before


def test_a_second_driver_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    with (tmp_path / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="being written by another labeling job"):
            run_local(draws_job(), tmp_path)
    assert run_local(draws_job(), tmp_path).complete  # released: runs


def test_bad_jobs_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least one row"):
        draws_job(rows=0)
    with pytest.raises(ConfigError, match="shard-size"):
        draws_job(shard_size=0)
    with pytest.raises(ConfigError, match="JSON-able"):
        draws_job(spec={"path": Path("x")})
    with pytest.raises(ConfigError, match="workers"):
        run_label_job(draws_job(), tmp_path, workers=0)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConfigError, match="nothing answers at 127"):
        run_label_job(draws_job(), tmp_path, ray_address=f"127.0.0.1:{port}")


@dataclass
class Refuses:
    """Fails shard 1 with a user error, inside whichever worker labels it."""

    def __call__(self, shard: Shard) -> LabeledShard:
        if shard.index == 1:
            raise ConfigError("labeler", "refuses shard 1")
        return Draws()(shard)


def test_user_error_inside_a_ray_worker_stays_one_line(tmp_path: Path) -> None:
    """Ray Data re-raises what a worker raises as its own exception type; a
    ``DenseRewardError`` must still reach the user as one line, and the shards other workers
    committed stay committed."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests
    try:
        job = LabelJob({"labels": "refuses"}, 8, Refuses, shard_size=2)
        with pytest.raises(DenseRewardError, match=r"^labeler: refuses shard 1$"):
            run_label_job(job, tmp_path, workers=1, progress=False)
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert [r.index for r in job_records(tmp_path)] == [0]


# --------------------------------------------------------------------------- rollouts files


def write_lines(path: Path, lines: list[object]) -> Path:
    path.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n",
        encoding="utf-8",
    )
    return path


GOOD = {
    "id": "a",
    "problem": {"family": "arithmetic", "prompt": "1+2", "steps": ["1+2=3"], "answer": "3"},
    "response": "1+2=3ки#3",
}


def test_rollouts_round_trip(tmp_path: Path) -> None:
    items = [
        Rollout(f"{i}", p, p.response if i % 2 else "garbled") for i, p in enumerate(problems(5))
    ]
    write_rollouts(items, tmp_path / "r.jsonl")
    back = read_rollouts(tmp_path / "r.jsonl")
    assert [(r.id, r.problem, r.response) for r in back] == [
        (r.id, r.problem, r.response) for r in items
    ]
    assert [r.line for r in back] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ("{not json", "line"),
        ({**GOOD, "id": None}, "id"),
        ({**GOOD, "id": ""}, "id"),
        ({**GOOD, "id": "first"}, "id"),  # a duplicate of line 1
        ({**GOOD, "problem": "1+2"}, "problem"),
        ({**GOOD, "problem": {**GOOD["problem"], "family": "poetry"}}, "problem.family"),
        ({**GOOD, "problem": {**GOOD["problem"], "steps": "1+2=3"}}, "problem.steps"),
        ({**GOOD, "problem": {**GOOD["problem"], "answer": 3}}, "problem.answer"),
        ({**GOOD, "response": ["1+2=3"]}, "response"),
    ],
)
def test_bad_rollout_line_names_file_line_and_field(tmp_path: Path, bad: object, field: str):
    path = write_lines(tmp_path / "r.jsonl", [{**GOOD, "id": "first"}, "", bad])
    with pytest.raises(ValidationError) as caught:
        read_rollouts(path)
    assert str(caught.value).startswith(f"{path}:3: field '{field}'")


# --------------------------------------------------------------------------- the reasoning job

ROOT = Path(__file__).resolve().parents[2]


def label_command(*args: object) -> list[str]:
    executable = Path(sys.executable).with_name("densereward")
    command = (
        [str(executable)] if executable.exists() else [sys.executable, "-m", "densereward.cli"]
    )
    return [*command, "label", *map(str, args)]


# One torch thread in every run: the same arithmetic in all of them (the reference, the killed
# runs, Ray's actors, which Ray gives one), and no OpenMP barrier stalls on a busy CI machine.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_label(*args: object, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        label_command(*args), capture_output=True, text=True, timeout=timeout, env=ENV
    )


SHARD_SIZE = 2  # 32 shards of the example's 64 rollouts: many moments to be killed at
ROLLOUTS_PER_STEP = 16  # a few tens of milliseconds per shard: kills land between commits


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``densereward label --example`` run once, uninterrupted: its inputs (``example/``) are
    every other run's, and its output is what they must equal."""
    out = tmp_path_factory.mktemp("labels") / "reference"
    result = run_label(
        "--example",
        "--out",
        out,
        "--local",
        "--no-progress",
        "--shard-size",
        SHARD_SIZE,
        "--rollouts-per-step",
        ROLLOUTS_PER_STEP,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "labelled" in result.stdout
    return out


def inputs(reference: Path) -> list[object]:
    example = reference / "example"
    return [
        example / "rollouts.jsonl",
        "--prover",
        example / "prover.pt",
        "--prm",
        example / "prm.pt",
        "--shard-size",
        SHARD_SIZE,
        "--rollouts-per-step",
        ROLLOUTS_PER_STEP,
        "--no-progress",
    ]


def assert_same_output(out: Path, reference: Path) -> None:
    """The same table, every (rollout, step) once, and byte-identical shard files."""
    table, expected = read_labels(out), read_labels(reference)
    assert table.equals(expected)
    keys = list(
        zip(table.column("rollout").to_pylist(), table.column("step").to_pylist(), strict=True)
    )
    assert len(keys) == len(set(keys))
    rollouts = read_rollouts(reference / "example" / "rollouts.jsonl")
    assert set(keys) == {
        (r.id, step) for r in rollouts for step in range(r.response.count(STEP_TAG) + 1)
    }
    assert [r.sha256 for r in job_records(out)] == [r.sha256 for r in job_records(reference)]
    strays = [p for p in out.rglob("*.tmp")]
    assert strays == []


@pytest.fixture
def one_thread():
    """This process computes with one torch thread, as the command runs do (``ENV``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_example_labels_follow_the_worlds_layout_and_the_in_process_labeler(
    reference: Path, one_thread: None
) -> None:
    """Each response has its tagged steps' MC values (what ``monte_carlo_labels`` gives for the
    shard's seed), then its exact verdict; hard labels are ``soft > 0``; PRM scores in (0, 1)."""
    table = read_labels(reference).to_pandas()
    rollouts = read_rollouts(reference / "example" / "rollouts.jsonl")
    world, policy = load_model(reference / "example" / "prover.pt", "policy", "--prover")
    tokenizer = build_tokenizer()
    seed = shard_seed(0, 5)
    shard = rollouts[5 * SHARD_SIZE : 6 * SHARD_SIZE]
    again = label_steps(
        policy, tokenizer, shard, range(10, 12), ROLLOUTS_PER_STEP, world.max_new_tokens, seed
    ).table.to_pandas()
    distinct = list(dict.fromkeys(r.problem for r in shard))
    prover = Prover(
        policy,
        tokenizer,
        [policy_prompt(p) for p in distinct],
        lambda i, text: grade(distinct[i], text).correct,
        world.max_new_tokens,
    )
    steps = [list(parse_response(r.response)[0])[: r.response.count(STEP_TAG)] for r in shard]
    direct = monte_carlo_labels(
        prover,
        [distinct.index(r.problem) for r in shard],
        steps,
        STEP_TAG,
        ROLLOUTS_PER_STEP,
        seed,
        include_start=False,
    )
    expected = [
        [*tag_aligned(r.response, values), float(grade(r.problem, r.response).correct)]
        for r, values in zip(shard, direct.soft, strict=True)
    ]
    assert again["soft"].tolist() == [v for row in expected for v in row]
    mine = table[table["row"].isin([10, 11])].reset_index(drop=True)
    assert mine[again.columns].equals(again)
    assert (table["hard"] == (table["soft"] > 0).astype(float)).all()
    tails = table[table["label_source"] == "outcome"]
    assert (tails["soft"] == tails["outcome"]).all() and len(tails) == len(rollouts)
    assert table["prm"].between(0, 1, inclusive="neither").all()
    assert 0 < table["soft"].mean() < 1  # the example's prover is right sometimes


def committed(out: Path) -> int:
    try:
        return len(json.loads((out / "manifest.json").read_text())["committed"])
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def kill_and_resume(
    args: list[object], out: Path, kills: int, rng: np.random.Generator
) -> list[int]:
    """Start the command, SIGKILL it at a random moment (after a random number of further shard
    commits and a random delay), ``kills`` times; then run it to the end. Returns the shards
    committed at each kill."""
    at_kill = []
    for _ in range(kills):
        target = committed(out) + int(rng.integers(0, 7))
        delay = float(rng.uniform(0.0, 0.1))
        with (out.parent / f"{out.name}.log").open("a") as log:
            process = subprocess.Popen(
                label_command(*args, "--out", out), stdout=subprocess.DEVNULL, stderr=log, env=ENV
            )
        deadline = time.monotonic() + 240
        while process.poll() is None and committed(out) < target and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
        at_kill.append(committed(out))
    print("shards committed at each kill:", at_kill)
    final = run_label(*args, "--out", out)
    assert final.returncode == 0, final.stderr[-3000:]
    return at_kill


def test_killed_label_job_resumes_to_the_uninterrupted_output(reference: Path) -> None:
    """The real command, in-process labeler, SIGKILLed at 3 random moments: the rerun after the
    last kill writes exactly the reference's labels, every one once."""
    out = reference.parent / "killed-local"
    total = len(job_records(reference))
    at_kill = kill_and_resume([*inputs(reference), "--local"], out, 3, np.random.default_rng(13))
    assert_same_output(out, reference)
    assert at_kill == sorted(at_kill)
    assert sum(0 < n < total for n in at_kill) >= 2, at_kill  # most kills land mid-job


def test_label_job_on_ray_writes_what_the_in_process_one_does(reference: Path) -> None:
    """Ray Data actors (one thread each) and this process (all cores) label every shard
    identically: a shard's labels depend on its seed, not on who computed it."""
    out = reference.parent / "ray"
    result = run_label(*inputs(reference), "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_output(out, reference)


@pytest.mark.slow
def test_killed_ray_label_job_resumes_to_the_uninterrupted_output(reference: Path) -> None:
    out = reference.parent / "killed-ray"
    total = len(job_records(reference))
    at_kill = kill_and_resume(inputs(reference), out, 3, np.random.default_rng(7))
    assert_same_output(out, reference)
    assert sum(0 < n < total for n in at_kill) >= 1, at_kill


def test_label_command_errors_are_one_line(reference: Path, tmp_path: Path) -> None:
    bad = write_lines(tmp_path / "bad.jsonl", [GOOD, {**GOOD, "id": "b", "response": 7}])
    result = run_label(bad, "--prover", tmp_path / "none.pt", "--out", tmp_path / "out")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert f"{bad}:2: field 'response'" in lines[0]
    args = inputs(reference)
    args[args.index("--shard-size") + 1] = 4  # another job into the reference's folder
    result = run_label(*args, "--local", "--out", reference)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "holds another labeling job" in lines[0]
    result = run_label("--example", bad, "--out", tmp_path / "out")
    assert result.returncode == 2 and "--example" in result.stderr


@pytest.mark.parametrize(
    ("option", "value"), [("--rollouts-per-step", "-1"), ("--shard-size", "0"), ("--workers", "0")]
)
def test_bad_options_are_refused_before_the_example_is_built(
    tmp_path: Path, option: str, value: str
) -> None:
    out = tmp_path / "out"
    result = run_label("--example", "--out", out, option, value)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0] == f"error: {option}: must be at least 1, got {value}"
    assert not out.exists()  # no prover trained, nothing written
