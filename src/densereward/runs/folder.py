"""The run folder: each finished (method, seed) committed as it finishes; a killed run resumes.

Layout::

    recipe.yaml               the resolved recipe: what the folder is a run of (written first)
    pairs/<m>-seed<s>.parquet one (method, seed)'s metrics rows        } committed together:
    pairs/<m>-seed<s>.json    its held-out evaluation and wall seconds } the .json is the commit
    checkpoints/<m>-seed<s>.pt   its policy
    config.yaml, metrics.parquet, evaluation.parquet, plots, report.md   once every pair is in

Every file is written to a temporary name and renamed, so a reader (or a resumed run) sees a
file whole or not at all. A pair counts as finished only once its ``.json`` exists, and that is
renamed last, after its metrics and checkpoint; a run killed at any moment leaves a folder whose
finished pairs are intact and whose ``report.md`` is absent. Running the same recipe with the
same folder again (``densereward run ... --out DIR``, or ``--resume DIR``) loads the finished
pairs, removes what the kill left half-written, and runs the rest; runs are deterministic per
seed, so the folder it ends with is the one an uninterrupted run writes.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

from densereward.core.components import RunResults
from densereward.core.errors import ConfigError
from densereward.io.atomic import atomic_path, umask
from densereward.runs.executor import MethodRun, Results
from densereward.runs.recipe import RunRecipe
from densereward.runs.report import plot_curves, report_markdown

IDENTITY = "recipe.yaml"
COMPLETE = "report.md"
"""Written last: a folder with it is a finished run."""


class RunFolder:
    """A run folder being written: created (or reopened to resume) for one recipe."""

    def __init__(self, path: Path, recipe: RunRecipe) -> None:
        self.path = path
        self.recipe = recipe

    @staticmethod
    def open(path: Path, recipe: RunRecipe, resume: bool = False) -> RunFolder:
        """The folder for ``recipe`` at ``path``: new, or, when it holds an unfinished run of
        the same recipe, reopened (``resume`` says the user asked for that folder to exist).

        Refuses a finished run, a folder that is not a run, and a run of another recipe, before
        anything is written.
        """
        identity = _identity(recipe)
        _remove_stale_staging(path)
        if not path.exists():
            if resume:
                raise ConfigError("--resume", f"{path}: no such run folder")
            try:
                _create(path, identity)
            except OSError:  # another run made it first: checked (and locked) below
                pass
            else:
                folder = RunFolder(path, recipe)
                folder._lock()
                return folder
        if not path.is_dir():
            raise ConfigError("--out", f"{path} exists and is not a folder")
        if (path / COMPLETE).exists():
            raise ConfigError("--out", f"{path} holds a finished run; choose a new folder")
        recorded = path / IDENTITY
        if not recorded.exists():
            raise ConfigError(
                "--out", f"{path} already exists and is not a run folder; choose a new folder"
            )
        if recorded.read_text(encoding="utf-8") != identity:
            raise ConfigError(
                "--resume" if resume else "--out",
                f"{path} holds an unfinished run of a different recipe "
                f"({_first_difference(recorded, recipe)}); resume it with the recipe it was "
                "started with, or choose a new folder",
            )
        folder = RunFolder(path, recipe)
        folder._lock()
        folder._remove_partial_files()
        return folder

    def _lock(self) -> None:
        """Hold an exclusive lock on the folder while this process writes it (released when
        the process ends, however it ends): a second run on the same folder would delete the
        first one's files in flight as half-written."""
        handle = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise ConfigError(
                "--out", f"{self.path} is being written by another densereward run"
            ) from None
        self._handle: int | None = handle

    def close(self) -> None:
        """Release the lock (a process that ends releases it too)."""
        handle, self._handle = getattr(self, "_handle", None), None
        if handle is not None:
            os.close(handle)

    def pair_path(self, method: str, seed: int, suffix: str) -> Path:
        base = "checkpoints" if suffix == ".pt" else "pairs"
        return self.path / base / f"{method}-seed{seed}{suffix}"

    def finished(self) -> Results:
        """The (method, seed) pairs already committed, loaded; pairs of methods or seeds the
        recipe no longer names are not (the identity check makes that impossible in practice)."""
        out: Results = {}
        for method in self.recipe.methods:
            for seed in self.recipe.seeds:
                record = self.pair_path(method, seed, ".json")
                if not record.exists():
                    continue
                info = json.loads(record.read_text(encoding="utf-8"))
                rows = pq.read_table(self.pair_path(method, seed, ".parquet")).to_pylist()
                out[(method, seed)] = MethodRun(
                    [{k: v for k, v in row.items() if v is not None} for row in rows],
                    self.pair_path(method, seed, ".pt").read_bytes(),
                    float(info["seconds"]),
                    info["evaluation"],
                )
        return out

    def remove(self) -> None:
        """Delete the folder: a run that failed before any pair finished leaves nothing."""
        shutil.rmtree(self.path, ignore_errors=True)

    def committed(self) -> int:
        """How many (method, seed) pairs are committed."""
        return len(list((self.path / "pairs").glob("*.json")))

    def commit(self, key: tuple[str, int], run: MethodRun) -> None:
        """Write one finished (method, seed): checkpoint and metrics, then its record."""
        method, seed = key
        with atomic_path(self.pair_path(method, seed, ".pt")) as temporary:
            temporary.write_bytes(run.checkpoint)
        with atomic_path(self.pair_path(method, seed, ".parquet")) as temporary:
            pq.write_table(_table(run.rows), temporary)
        record = {"seconds": run.seconds, "evaluation": run.evaluation}
        with atomic_path(self.pair_path(method, seed, ".json")) as temporary:
            # NumPy scalars as the Python numbers they hold (an int stays an int)
            text = json.dumps(record, default=lambda value: value.item())
            temporary.write_text(text, encoding="utf-8")

    def complete(self, results: Results, wall: float, execution: dict[str, Any]) -> None:
        """The run's own files, from every pair; ``report.md`` last."""
        recipe = self.recipe
        config = recipe.resolved()
        config["execution"] = {
            **execution,
            "wall_seconds": round(wall, 1),
            "python": platform.python_version(),
            "torch": str(torch.__version__),
            "cpus": os.cpu_count(),
        }
        with atomic_path(self.path / "config.yaml") as temporary:
            temporary.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        summary = run_results(recipe, results, wall)
        with atomic_path(self.path / "metrics.parquet") as temporary:
            pq.write_table(_table(summary.rows), temporary)
        with atomic_path(self.path / "evaluation.parquet") as temporary:
            pq.write_table(_table(summary.evaluations), temporary)
        for plot in recipe.world.plots:
            with atomic_path(self.path / plot.file, keep_suffix=True) as temporary:
                title = f"{recipe.name}: {recipe.world.label()}"
                plot_curves(summary, recipe.world.progress, plot, title, temporary)
        with atomic_path(self.path / COMPLETE) as temporary:
            temporary.write_text(report_markdown(recipe, summary), encoding="utf-8")

    def _remove_partial_files(self) -> None:
        """What a kill left half-written: temporary files, and the metrics or checkpoint of a
        pair whose record never landed (it is rerun)."""
        for temporary in self.path.rglob(".*.tmp*"):
            temporary.unlink(missing_ok=True)
        for sub, suffix in (("pairs", ".parquet"), ("checkpoints", ".pt")):
            for path in (self.path / sub).glob(f"*{suffix}"):
                if not (self.path / "pairs" / (path.name.removesuffix(suffix) + ".json")).exists():
                    path.unlink()


def run_results(recipe: RunRecipe, results: Results, wall: float) -> RunResults:
    """What a world's report reads, in the recipe's order of methods and seeds."""
    runs = [results[(m, s)] for m in recipe.methods for s in recipe.seeds]
    return RunResults(
        tuple(recipe.methods),
        recipe.seeds,
        [row for run in runs for row in run.rows],
        [run.evaluation for run in runs],
        {key: run.seconds for key, run in results.items()},
        recipe.budget,
        wall,
    )


def _identity(recipe: RunRecipe) -> str:
    return yaml.safe_dump(recipe.resolved(), sort_keys=False)


def _first_difference(recorded: Path, recipe: RunRecipe) -> str:
    old, new = yaml.safe_load(recorded.read_text(encoding="utf-8")), recipe.resolved()

    def walk(a: Any, b: Any, where: str) -> str | None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in dict.fromkeys([*a, *b]):
                found = walk(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
                if found:
                    return found
            return None
        return None if a == b else f"{where}: {a!r} then, {b!r} now"

    return walk(old, new, "") or "recipe.yaml differs"


def _create(path: Path, identity: str) -> None:
    """Make the folder with its identity in one rename, so it never exists without one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".staging", dir=path.parent))
    try:
        (staging / IDENTITY).write_text(identity, encoding="utf-8")
        (staging / "pairs").mkdir()
        (staging / "checkpoints").mkdir()
        os.chmod(staging, 0o777 & ~umask())  # mkdtemp made it private
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _remove_stale_staging(path: Path) -> None:
    """A folder being created by a run that was killed before its rename: it holds nothing but
    the identity, and a live run renames its own within milliseconds of making it."""
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{path.name}.*.staging"):
            shutil.rmtree(stale, ignore_errors=True)


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    # methods log different reward components: every column, missing values null (from_pylist
    # would take the schema from the first row alone and drop the rest)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return pa.Table.from_pylist([{key: row.get(key) for key in columns} for row in rows])


__all__ = ["COMPLETE", "IDENTITY", "RunFolder", "run_results"]
