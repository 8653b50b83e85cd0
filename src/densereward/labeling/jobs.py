"""Labeling jobs that resume: input rows cut into fixed shards, each labelled on its own and
committed atomically as one Parquet file, with a manifest of what is done.

The engine knows nothing of what a label is. A job (:class:`LabelJob`) names its rows, a
JSON-able ``spec`` that identifies it (a world puts in the hashes of its inputs and models and its
parameters), and a picklable factory that builds a :class:`ShardLabeler` once per worker: the
model is loaded once per process, not once per shard.

Why a resumed job equals an uninterrupted one, exactly:

- shard ``k`` is rows ``[k·size, min((k+1)·size, rows))`` and its sampling seed is
  ``shard_seed(seed, k)``, so its labels depend on neither the run nor the worker that made them
  (as far as floating point allows: sampling is exact only on the same arithmetic, which the same
  torch build on the same kind of CPU gives);
- a shard's file (``shards/part-<k>.parquet``) is written to a temporary file beside it and
  moved into place with ``os.replace``, so it exists whole or not at all; the driver then
  records it (row count, label count, SHA-256 of the bytes) in ``manifest.json``, itself
  replaced atomically;
- on a rerun with the same output folder the manifest's job hash must match (another job is an
  error), temporary files left by a killed run are deleted, a committed shard whose file is
  missing or whose bytes changed is recomputed, and a shard file the manifest missed (killed
  between the two moves) is adopted if its metadata names this job and shard.

Execution: in this process (``local``), or as a Ray Data pipeline (``ray.data.from_items`` of the
pending shards, ``map_batches`` over an actor pool whose actors each build the labeler once),
on a private local Ray instance unless ``ray_address`` names a cluster. Workers return a
shard's Parquet bytes; only the driver writes, so the output folder need only be on the
driver's machine and a killed driver leaves no worker writing into it. A file lock keeps two drivers out of
one folder.

>>> import tempfile
>>> class Squares:
...     def __call__(self, shard):
...         rows = list(range(shard.start, shard.stop))
...         return LabeledShard(pa.table({"row": rows, "label": [r * r for r in rows]}))
>>> out = Path(tempfile.mkdtemp())
>>> job = LabelJob({"labels": "squares"}, rows=10, labeler=Squares, shard_size=4)
>>> run_label_job(job, out, local=True, progress=False).committed
3
>>> read_labels(out).column("label").to_pylist()
[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import time
import warnings
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from densereward.core.errors import ConfigError, DenseRewardError, ValidationError
from densereward.core.ray_session import check_reachable, start_ray
from densereward.io.atomic import atomic_path

FORMAT = 1
"""Version of the manifest and of what the job hash covers."""
MANIFEST = "manifest.json"
SHARDS = "shards"
LOCK = ".lock"
JOB_KEY, SHARD_KEY = b"densereward.job", b"densereward.shard"
"""Parquet schema metadata of every shard file: the job hash and the shard index."""


def check_sizes(shard_size: int, workers: int | None) -> None:
    """A job's sizes: at least one row per shard and, when given, one worker. A command calls
    it before anything costly (an example to build); jobs call it themselves."""
    if shard_size < 1:
        raise ConfigError("--shard-size", f"must be at least 1, got {shard_size}")
    if workers is not None and workers < 1:
        raise ConfigError("--workers", f"must be at least 1, got {workers}")


def shard_seed(seed: int, index: int) -> int:
    """The sampling seed of shard ``index`` of a job seeded ``seed``: a function of those two
    only (NumPy's ``SeedSequence``, so neighbouring shards get unrelated streams).

    >>> shard_seed(0, 3) == shard_seed(0, 3), shard_seed(0, 3) == shard_seed(0, 4)
    (True, False)
    """
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def shard_file(index: int) -> str:
    return f"part-{index:05d}.parquet"


@dataclass(frozen=True)
class Shard:
    """Input rows ``[start, stop)`` and the seed their labels are drawn with."""

    index: int
    start: int
    stop: int
    seed: int


@dataclass(frozen=True)
class LabeledShard:
    """A shard's labels as a table (any columns; the engine adds nothing) and the tokens its
    labeler generated."""

    table: pa.Table
    generated_tokens: int = 0


class ShardLabeler(Protocol):
    """Labels one shard; built once per worker by the job's factory."""

    def __call__(self, shard: Shard) -> LabeledShard: ...


@dataclass(frozen=True)
class LabelJob:
    """A labeling job: what identifies it, how many input rows, how they are cut, and how a
    worker builds its labeler.

    ``spec`` must be JSON-able and should change whenever the labels would (input and model
    hashes, label parameters): its hash, with ``rows``, ``shard_size`` and ``seed``, is the job's
    identity in the manifest. ``labeler`` is called once per worker (it must pickle, for Ray).
    """

    spec: Mapping[str, Any]
    rows: int
    labeler: Callable[[], ShardLabeler]
    shard_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rows < 1:
            raise ConfigError("rows", f"a labeling job needs at least one row, got {self.rows}")
        check_sizes(self.shard_size, None)
        try:
            json.dumps(self.identity(), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ConfigError("spec", f"must be JSON-able: {error}") from None

    @property
    def num_shards(self) -> int:
        return -(-self.rows // self.shard_size)

    def identity(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "spec": dict(self.spec),
            "rows": self.rows,
            "shard_size": self.shard_size,
            "seed": self.seed,
        }

    @property
    def hash(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def shards(self) -> list[Shard]:
        return [
            Shard(
                k, k * self.shard_size, min((k + 1) * self.shard_size, self.rows), self.seed_of(k)
            )
            for k in range(self.num_shards)
        ]

    def seed_of(self, index: int) -> int:
        return shard_seed(self.seed, index)


@dataclass(frozen=True)
class ShardRecord:
    """What the manifest keeps of a committed shard."""

    index: int
    rows: int
    labels: int
    generated_tokens: int
    sha256: str
    seconds: float
    """labelling time on its worker (0 for an adopted file)"""


@dataclass(frozen=True)
class JobSummary:
    """Where a job stands after a run: totals over the whole job and what this run did."""

    out: Path
    shards: int
    committed: int
    labels: int
    computed: int
    """shards labelled by this run"""
    adopted: int
    """shard files a killed run had written but not recorded"""
    repaired: int
    """committed shards whose file was missing or changed, labelled again"""
    generated_tokens: int
    """tokens the labelers generated in this run"""
    seconds: float

    @property
    def complete(self) -> bool:
        return self.committed == self.shards


class JobInterrupted(DenseRewardError):
    """Ctrl-C during a job: what is committed stays, and a rerun of the same command resumes."""

    def __init__(self, committed: int, shards: int) -> None:
        self.committed = committed
        self.shards = shards
        super().__init__(
            f"interrupted: {committed} of {shards} shards committed; "
            "rerun the same command to resume"
        )


# --------------------------------------------------------------------------- the unit of work


def encode_shard(labeler: ShardLabeler, job_hash: str, shard: Shard) -> tuple[ShardRecord, bytes]:
    """Label ``shard`` and serialise it: the one function both execution paths run per shard.

    The bytes are a Parquet file whose schema metadata names the job and the shard (so a file
    found without a manifest entry can be adopted safely); the record carries their SHA-256.
    """
    started = time.perf_counter()
    labeled = labeler(shard)
    if not isinstance(labeled, LabeledShard):
        raise TypeError(f"a shard labeler returns LabeledShard, got {type(labeled).__name__}")
    metadata = dict(labeled.table.schema.metadata or {})
    metadata.update({JOB_KEY: job_hash.encode(), SHARD_KEY: str(shard.index).encode()})
    buffer = io.BytesIO()
    pq.write_table(labeled.table.replace_schema_metadata(metadata), buffer)
    data = buffer.getvalue()
    record = ShardRecord(
        shard.index,
        shard.stop - shard.start,
        labeled.table.num_rows,
        int(labeled.generated_tokens),
        hashlib.sha256(data).hexdigest(),
        time.perf_counter() - started,
    )
    return record, data


def commit_shard(out: Path, data: bytes) -> None:
    """Move a shard's bytes into place atomically (``index`` is in its metadata)."""
    index = int(pq.read_schema(pa.BufferReader(data)).metadata[SHARD_KEY])
    with atomic_path(out / SHARDS / shard_file(index)) as temporary:
        temporary.write_bytes(data)


# --------------------------------------------------------------------------- the manifest


@dataclass
class _Manifest:
    job: LabelJob
    committed: dict[int, ShardRecord] = field(default_factory=dict)

    def save(self, out: Path) -> None:
        document = {
            "format": FORMAT,
            "job": self.job.hash,
            "identity": self.job.identity(),
            "shards": self.job.num_shards,
            "complete": len(self.committed) == self.job.num_shards,
            "labels": sum(r.labels for r in self.committed.values()),
            "committed": [asdict(self.committed[k]) for k in sorted(self.committed)],
        }
        with atomic_path(out / MANIFEST) as temporary:
            temporary.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def _read_manifest(out: Path) -> dict[str, Any] | None:
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(document, dict) or not isinstance(document.get("committed"), list):
            raise ValueError("not a manifest object")
        return document
    except (ValueError, UnicodeDecodeError) as error:
        raise ValidationError("manifest", f"unreadable ({error})", source=str(path)) from None


def _records(document: Mapping[str, Any], path: Path) -> dict[int, ShardRecord]:
    try:
        return {int(r["index"]): ShardRecord(**r) for r in document["committed"]}
    except (TypeError, KeyError, ValueError) as error:
        raise ValidationError("committed", f"malformed entry ({error})", source=str(path)) from None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _shard_identity(path: Path) -> tuple[str, int] | None:
    """The (job hash, shard index) a shard file's metadata names, None if unreadable."""
    try:
        metadata = pq.read_schema(path).metadata or {}
        return metadata[JOB_KEY].decode(), int(metadata[SHARD_KEY])
    except Exception:  # a truncated or foreign file: it will be recomputed
        return None


def _recover(job: LabelJob, out: Path) -> tuple[_Manifest, int, int]:
    """The manifest of ``job`` in ``out`` after a possibly killed run: checks the job hash,
    deletes temporary files, drops committed shards whose bytes are gone or changed, adopts
    complete shard files it missed. Returns it with the adopted and repaired counts."""
    document = _read_manifest(out)
    manifest = _Manifest(job)
    if document is not None:
        if document.get("job") != job.hash:
            raise ConfigError(
                "--out",
                f"{out} holds another labeling job (job {str(document.get('job'))[:12]}, this "
                f"one {job.hash[:12]}: different inputs or parameters); use a new --out",
            )
        manifest.committed = _records(document, out / MANIFEST)
    shards = out / SHARDS
    for stray in [*out.glob(f".{MANIFEST}.*.tmp"), *shards.glob(".part-*.tmp")]:
        stray.unlink(missing_ok=True)
    changed = set()
    for index, record in list(manifest.committed.items()):
        path = shards / shard_file(index)
        if index >= job.num_shards or not path.exists() or _sha256(path) != record.sha256:
            del manifest.committed[index]
            changed.add(index)
    adopted, every = 0, job.shards()
    for path in sorted(shards.glob("part-*.parquet")):
        identity = _shard_identity(path)
        if (
            identity is None
            or identity[0] != job.hash
            or path.name != shard_file(identity[1])
            or identity[1] in changed  # not what was committed: label it again
        ):
            path.unlink()
            continue
        index = identity[1]
        if index in manifest.committed or index >= job.num_shards:
            continue
        shard = every[index]
        labels = pq.read_metadata(path).num_rows
        manifest.committed[index] = ShardRecord(
            index, shard.stop - shard.start, labels, 0, _sha256(path), 0.0
        )
        adopted += 1
    return manifest, adopted, len(changed)


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """One driver per folder; the kernel drops the lock when its process dies, even by
    SIGKILL, so a killed run never blocks its rerun."""
    handle = (out / LOCK).open("a")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                "--out", f"{out} is being written by another labeling job (its lock is held)"
            ) from None
        yield
    finally:
        handle.close()


# --------------------------------------------------------------------------- running a job


def run_label_job(
    job: LabelJob,
    out: str | Path,
    *,
    local: bool = False,
    ray_address: str | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> JobSummary:
    """Label every shard of ``job`` not yet committed in ``out``; safe to rerun after any kill.

    ``local``: in this process, one shard after another; else a Ray Data pipeline over an actor
    pool of ``workers`` (default: the cluster's CPUs, at most the pending shards), on a private
    local Ray instance unless ``ray_address`` is given. Ctrl-C raises :class:`JobInterrupted`
    after committing nothing half-done.
    """
    check_sizes(job.shard_size, workers)
    if not local and ray_address is not None:
        check_reachable(ray_address)  # before anything is written
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError("--out", f"{out} is a file; the job writes a folder")
    (out / SHARDS).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    manifest = _Manifest(job)
    computed, tokens = 0, 0
    with _locked(out):
        try:
            manifest, adopted, repaired = _recover(job, out)
            manifest.save(out)
            pending = [s for s in job.shards() if s.index not in manifest.committed]
            with _ProgressBar(job.num_shards, enabled=progress) as bar:
                bar.advance(
                    len(manifest.committed), sum(r.labels for r in manifest.committed.values()), 0
                )
                results = (
                    _run_here(job, pending)
                    if local
                    else _run_on_ray(job, pending, ray_address, workers)
                )
                # closing: the Ray generator shuts Ray down however the loop ends
                with contextlib.closing(results):
                    for record, data in results:
                        commit_shard(out, data)
                        manifest.committed[record.index] = record
                        manifest.save(out)
                        computed += 1
                        tokens += record.generated_tokens
                        bar.advance(1, record.labels, record.generated_tokens)
        except KeyboardInterrupt:
            raise JobInterrupted(len(manifest.committed), job.num_shards) from None
    return JobSummary(
        out,
        job.num_shards,
        len(manifest.committed),
        sum(r.labels for r in manifest.committed.values()),
        computed,
        adopted,
        repaired,
        tokens,
        time.perf_counter() - started,
    )


def _run_here(job: LabelJob, pending: Sequence[Shard]) -> Generator[tuple[ShardRecord, bytes]]:
    if not pending:
        return
    labeler = job.labeler()
    for shard in pending:
        yield encode_shard(labeler, job.hash, shard)


class _ShardWorker:
    """A Ray Data actor: builds the labeler once, then labels one shard per batch."""

    def __init__(self, labeler: Callable[[], ShardLabeler], job: str) -> None:
        self.labeler = labeler()
        self.job = job

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"record": [], "data": [], "error": []}
        for index, start, stop, seed in zip(
            batch["index"], batch["start"], batch["stop"], batch["seed"], strict=True
        ):
            shard = Shard(int(index), int(start), int(stop), int(seed))
            try:
                record, data = encode_shard(self.labeler, self.job, shard)
            except DenseRewardError as error:
                # Ray Data re-raises a worker's exception as its own type, with a traceback:
                # a user error travels as data instead, to stay one line
                out["record"].append("")
                out["data"].append(b"")
                out["error"].append(str(error))
                continue
            out["record"].append(json.dumps(asdict(record)))
            out["data"].append(data)
            out["error"].append("")
        return out


def _run_on_ray(
    job: LabelJob, pending: Sequence[Shard], address: str | None, workers: int | None
) -> Generator[tuple[ShardRecord, bytes]]:
    if not pending:
        return
    import ray
    import ray.data

    try:
        start_ray(address)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # ours is the one the user sees
        context.print_on_execution_start = False
        context.enable_auto_log_stats = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        size = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        items = [asdict(s) for s in pending]
        with warnings.catch_warnings():
            # ``max_restarts=0``: a dead actor fails the run (a rerun resumes it) instead of
            # Ray restarting it from constructor arguments it may no longer hold.
            warnings.simplefilter("ignore")
            dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                _ShardWorker,
                fn_constructor_kwargs={"labeler": job.labeler, "job": job.hash},
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=min(size, len(items))),
                num_cpus=1,
                max_restarts=0,
            )
        rows = iter(dataset.iter_rows())
        try:
            for row in rows:
                if row["error"]:
                    raise DenseRewardError(row["error"])
                yield ShardRecord(**json.loads(row["record"])), bytes(row["data"])
        finally:
            # stop Ray Data's executor thread first: if it polls Ray after ray.shutdown(), Ray
            # ends the whole process ("the core worker has already been shutdown"), exit code 1
            close = getattr(rows, "close", None)
            if close is not None:
                close()
    finally:
        ray.shutdown()


class _ProgressBar:
    """Shards committed of the total, labels, and generated tokens per second of this run."""

    def __init__(self, shards: int, enabled: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("labeling shards"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[labels]} labels, {task.fields[rate]} tokens/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            disable=not enabled,
            transient=False,
        )
        self.task = self.progress.add_task("labeling", total=shards, labels=0, rate="-")
        self.labels = 0
        self.tokens = 0
        self.started = time.perf_counter()

    def __enter__(self) -> _ProgressBar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def advance(self, shards: int, labels: int, tokens: int) -> None:
        self.labels += labels
        self.tokens += tokens
        rate = self.tokens / max(time.perf_counter() - self.started, 1e-9)
        self.progress.update(
            self.task, advance=shards, labels=self.labels, rate=f"{rate:,.0f}" if rate else "-"
        )


# --------------------------------------------------------------------------- reading the output


def read_manifest(out: str | Path) -> dict[str, Any]:
    """The manifest of a job folder (its ``complete`` flag, shard records, job identity)."""
    out = Path(out)
    document = _read_manifest(out)
    if document is None:
        raise ValidationError(
            "manifest", "no manifest.json: not a labeling job folder", source=str(out)
        )
    return document


def read_labels(out: str | Path, *, allow_partial: bool = False, verify: bool = True) -> pa.Table:
    """Every committed shard as one table, in shard order (input order within each shard).

    Refuses an incomplete job unless ``allow_partial``; with ``verify`` each file's SHA-256 is
    checked against the manifest.
    """
    out = Path(out)
    document = read_manifest(out)
    records = _records(document, out / MANIFEST)
    if not allow_partial and not document.get("complete"):
        raise ValidationError(
            "manifest",
            f"job incomplete: {len(records)} of {document.get('shards')} shards committed; "
            "rerun the labeling command to finish it",
            source=str(out),
        )
    tables = []
    for index in sorted(records):
        path = out / SHARDS / shard_file(index)
        if verify and (not path.exists() or _sha256(path) != records[index].sha256):
            raise ValidationError(
                "sha256", "shard file missing or changed since it was committed", source=str(path)
            )
        tables.append(pq.read_table(path).replace_schema_metadata(None))
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables)


def job_records(out: str | Path) -> list[ShardRecord]:
    """The committed shards' records, in shard order."""
    out = Path(out)
    records = _records(read_manifest(out), out / MANIFEST)
    return [records[k] for k in sorted(records)]


__all__ = [
    "JobInterrupted",
    "JobSummary",
    "LabelJob",
    "LabeledShard",
    "Shard",
    "ShardLabeler",
    "ShardRecord",
    "commit_shard",
    "encode_shard",
    "job_records",
    "read_labels",
    "read_manifest",
    "run_label_job",
    "shard_seed",
]
