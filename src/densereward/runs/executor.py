"""Running a recipe's methods x seeds: one unit of work for every world, run here or on Ray.

A unit of work (``Job``) is one seed and the methods it trains: all of them when the world's
methods share a setup (``World.shares_setup``: an SFT policy, reward models), else one. The
same function, ``run_job``, runs every unit, in this process (``local``) or as a Ray task; only
how units are handed out differs.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from densereward.core.components import World
from densereward.core.errors import DenseRewardError
from densereward.pipeline import Recipe
from densereward.runs.recipe import RunRecipe

Report = Callable[[str, int, int], None]
"""``report(method, seed, progress)``: a run's position on the world's progress axis."""


@dataclass(frozen=True)
class Job:
    """One unit of work: ``methods`` trained on ``seed`` from one ``world.setup(seed)``."""

    world: World
    trainer: Any
    seed: int
    methods: dict[str, Recipe]


@dataclass(frozen=True)
class MethodRun:
    """What one (method, seed) leaves: metrics rows (with ``method``, ``seed``), the policy
    checkpoint, wall seconds, and the held-out evaluation row."""

    rows: list[dict[str, Any]]
    checkpoint: bytes
    seconds: float
    evaluation: dict[str, Any]


Results = dict[tuple[str, int], MethodRun]


def jobs(recipe: RunRecipe) -> list[Job]:
    if recipe.world.shares_setup:
        return [Job(recipe.world, recipe.trainer, s, dict(recipe.methods)) for s in recipe.seeds]
    return [
        Job(recipe.world, recipe.trainer, s, {m: recipe.methods[m]})
        for m in recipe.methods
        for s in recipe.seeds
    ]


def run_job(job: Job, report: Report | None = None) -> Results:
    """Set the world up for the job's seed, then train and evaluate each of its methods."""
    setup = job.world.setup(job.seed)
    trainer = dataclasses.replace(job.trainer, seed=job.seed)
    out: Results = {}
    for method, recipe in job.methods.items():
        start = time.perf_counter()

        def progress(value: int, method: str = method) -> None:
            if report is not None:
                report(method, job.seed, value)

        trained = job.world.train(setup, trainer, recipe, progress)
        buffer = io.BytesIO()
        torch.save(trained.policy.state_dict(), buffer)
        key = {"method": method, "seed": job.seed}
        out[(method, job.seed)] = MethodRun(
            [{**key, **row} for row in trained.metrics],
            buffer.getvalue(),
            time.perf_counter() - start,
            {**key, **trained.evaluation},
        )
    return out


def run_jobs(
    recipe: RunRecipe, local: bool, ray_address: str | None, progress: bool = True
) -> Results:
    """Every unit of work of ``recipe``, with live progress bars; in this process when
    ``local``, else on Ray (a private local instance unless ``ray_address`` names a cluster)."""
    units = jobs(recipe)
    keys = [(m, s) for m in recipe.methods for s in recipe.seeds]
    with _Progress(keys, recipe.budget, enabled=progress) as bars:
        if local:
            results: Results = {}
            for job in units:
                finished = run_job(job, bars.update)
                results.update(finished)
                for key in finished:
                    bars.finish(key)
            return results
        return _run_on_ray(units, bars, ray_address)


def _run_on_ray(units: list[Job], bars: _Progress, address: str | None) -> Results:
    import ray

    if address is None:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private, local, single-user instance
    ray.init(
        address=address,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        ignore_reinit_error=True,
        num_cpus=None if address else os.cpu_count(),
    )

    @ray.remote
    class Board:
        def __init__(self) -> None:
            self.progress: dict[tuple[str, int], int] = {}

        def report(self, method: str, seed: int, value: int) -> None:
            self.progress[(method, seed)] = value

        def snapshot(self) -> dict[tuple[str, int], int]:
            return self.progress

    @ray.remote(num_cpus=1)
    def remote_job(job: Job, board: Any) -> Results:
        return run_job(job, lambda m, s, value: board.report.remote(m, s, value))

    try:
        board = Board.remote()  # type: ignore[attr-defined]
        pending = {remote_job.remote(job, board): job for job in units}
        results: Results = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for (method, seed), value in ray.get(board.snapshot.remote()).items():
                bars.update(method, seed, value)
            for reference in done:
                pending.pop(reference)
                try:
                    finished = ray.get(reference)
                except ray.exceptions.RayTaskError as error:
                    # A user error inside a worker (a bad annotator address, say) is still one
                    # line for the user, not a remote traceback.
                    cause = getattr(error, "cause", None)
                    if isinstance(cause, DenseRewardError):
                        raise cause from None
                    raise
                results.update(finished)
                for key in finished:
                    bars.finish(key)
        return results
    finally:
        ray.shutdown()


class _Progress:
    """Rich progress bars, one per (method, seed), fed by the world's progress axis."""

    def __init__(self, keys: list[tuple[str, int]], budget: int, enabled: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.budget = budget
        self.progress = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            disable=not enabled,
            transient=False,
        )
        self.tasks = {
            key: self.progress.add_task(f"{key[0]} seed {key[1]}", total=budget) for key in keys
        }

    def __enter__(self) -> _Progress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def update(self, method: str, seed: int, value: int) -> None:
        self.progress.update(self.tasks[(method, seed)], completed=min(value, self.budget))

    def finish(self, key: tuple[str, int]) -> None:
        self.progress.update(self.tasks[key], completed=self.budget)
