"""The run folder, written whole or not at all.

It holds ``config.yaml`` (the resolved recipe and how it ran), ``metrics.parquet`` (one row per
update per run), ``evaluation.parquet`` (one row per run: the world's held-out evaluation of the
trained policy), ``checkpoints/`` (``<method>-seed<seed>.pt``), the world's plots and
``report.md``. It is written to a hidden temporary folder beside the destination and renamed
when complete, so a failed run leaves nothing behind.
"""

from __future__ import annotations

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
from densereward.runs.executor import Results
from densereward.runs.recipe import RunRecipe
from densereward.runs.report import plot_curves, report_markdown


def write_run_folder(
    out: Path, recipe: RunRecipe, results: Results, wall: float, execution: str
) -> None:
    """Write the whole folder to ``out`` (which must not exist) atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write(staging, recipe, results, wall, execution)
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(staging, 0o777 & ~mask)  # mkdtemp made it private
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


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


def _write(folder: Path, recipe: RunRecipe, results: Results, wall: float, execution: str) -> None:
    config = recipe.resolved()
    config["execution"] = {
        "ray_address": execution,
        "wall_seconds": round(wall, 1),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "cpus": os.cpu_count(),
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    summary = run_results(recipe, results, wall)
    pq.write_table(_table(summary.rows), folder / "metrics.parquet")
    pq.write_table(_table(summary.evaluations), folder / "evaluation.parquet")
    (folder / "checkpoints").mkdir()
    for (method, seed), run in results.items():
        (folder / "checkpoints" / f"{method}-seed{seed}.pt").write_bytes(run.checkpoint)
    for plot in recipe.world.plots:
        plot_curves(
            summary,
            recipe.world.progress,
            plot,
            f"{recipe.name}: {recipe.world.label()}",
            folder / plot.file,
        )
    (folder / "report.md").write_text(report_markdown(recipe, summary), encoding="utf-8")


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    # methods log different reward components: every column, missing values null (from_pylist
    # would take the schema from the first row alone and drop the rest)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return pa.Table.from_pylist([{key: row.get(key) for key in columns} for row in rows])
