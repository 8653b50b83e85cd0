"""Running a recipe's methods x seeds: one unit of work for every world, run here or on Ray.

A unit of work (``Job``) is one seed and the methods it trains: all of them when the world's
methods share a setup (``World.shares_setup``: an SFT policy, reward models), else one. The
same function, ``run_job``, runs every unit, in this process (``local``) or as a Ray task; only
how units are handed out differs.
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import torch

from densereward.core.components import World
from densereward.core.errors import DenseRewardError, NonFiniteError
from densereward.core.ray_session import start_ray
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
Commit = Callable[[tuple[str, int], MethodRun], None]
"""``commit(key, run)``: called with each (method, seed) as soon as it finishes."""


def jobs(recipe: RunRecipe, done: Collection[tuple[str, int]] = ()) -> list[Job]:
    """The units of work of ``recipe``, less the (method, seed) pairs in ``done``."""
    if recipe.world.shares_setup:
        units = [
            Job(
                recipe.world,
                recipe.trainer,
                s,
                {m: r for m, r in recipe.methods.items() if (m, s) not in done},
            )
            for s in recipe.seeds
        ]
    else:
        units = [
            Job(recipe.world, recipe.trainer, s, {m: recipe.methods[m]})
            for m in recipe.methods
            for s in recipe.seeds
            if (m, s) not in done
        ]
    return [job for job in units if job.methods]


def run_job(job: Job, report: Report | None, commit: Commit) -> None:
    """Set the world up for the job's seed, then train and evaluate each of its methods,
    handing each to ``commit`` as it finishes.

    Every method starts from the same global random state (its seed's), whichever methods ran
    before it in this process: a method's numbers do not depend on the others in the job, which
    is what lets a resumed run skip the finished ones and still end with the same numbers.
    """
    setup = job.world.setup(job.seed)
    trainer = dataclasses.replace(job.trainer, seed=job.seed)
    state = torch.random.get_rng_state()
    for method, recipe in job.methods.items():
        start = time.perf_counter()
        torch.random.set_rng_state(state)

        def progress(value: int, method: str = method) -> None:
            if report is not None:
                report(method, job.seed, value)

        try:
            trained = job.world.train(setup, trainer, recipe, progress)
        except NonFiniteError as error:
            raise error.within(f"method {method}") from None
        buffer = io.BytesIO()
        torch.save(trained.policy.state_dict(), buffer)
        key = {"method": method, "seed": job.seed}
        run = MethodRun(
            [{**key, **row} for row in trained.metrics],
            buffer.getvalue(),
            time.perf_counter() - start,
            {**key, **trained.evaluation},
        )
        commit((method, job.seed), run)


def run_jobs(
    recipe: RunRecipe,
    local: bool,
    ray_address: str | None,
    progress: bool,
    done: Collection[tuple[str, int]],
    commit: Commit,
) -> None:
    """Every unit of work of ``recipe`` but the (method, seed) pairs in ``done``, with live
    progress bars; in this process when ``local``, else on Ray (a private local instance
    unless ``ray_address`` names a cluster). Each pair goes to ``commit`` as it finishes: the
    run folder keeps the results, nothing here does."""
    units = jobs(recipe, done)
    keys = [(m, s) for m in recipe.methods for s in recipe.seeds]

    def finished(key: tuple[str, int], run: MethodRun) -> None:
        commit(key, run)
        bars.finish(key)

    with _Progress(keys, recipe.budget, enabled=progress) as bars:
        for key in done:
            bars.finish(key)
        if local:
            for job in units:
                run_job(job, bars.update, finished)
        elif units:
            _run_on_ray(units, bars, ray_address, finished)


def _run_on_ray(units: list[Job], bars: _Progress, address: str | None, finished: Commit) -> None:
    import ray

    try:
        start_ray(address)

        @ray.remote
        class Board:
            """Where remote jobs leave progress and finished pairs for the driver to commit."""

            def __init__(self) -> None:
                self.progress: dict[tuple[str, int], int] = {}
                self.finished: list[tuple[tuple[str, int], MethodRun]] = []

            def report(self, method: str, seed: int, value: int) -> None:
                self.progress[(method, seed)] = value

            def finish(self, key: tuple[str, int], run: MethodRun) -> None:
                self.finished.append((key, run))

            def take(self) -> tuple[dict[tuple[str, int], int], list[Any]]:
                finished, self.finished = self.finished, []
                return self.progress, finished

        @ray.remote(num_cpus=1)
        def remote_job(job: Job, board: Any) -> None:
            run_job(
                job,
                lambda m, s, value: board.report.remote(m, s, value),
                # waited on, so a pair is on the board before its job counts as done
                lambda key, run: ray.get(board.finish.remote(key, run)),
            )

        board = Board.remote()  # type: ignore[attr-defined]

        def drain() -> None:
            progress, pairs = ray.get(board.take.remote())
            for (method, seed), value in progress.items():
                bars.update(method, seed, value)
            for key, run in pairs:
                finished(key, run)

        pending = [remote_job.remote(job, board) for job in units]
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=0.5)
            drain()
            for reference in done:
                try:
                    ray.get(reference)
                except ray.exceptions.RayTaskError as error:
                    drain()  # what other jobs finished meanwhile is committed, not lost
                    # A user error inside a worker (a bad annotator address, say) is still one
                    # line for the user, not a remote traceback.
                    cause = getattr(error, "cause", None)
                    if isinstance(cause, DenseRewardError):
                        raise cause from None
                    raise
        drain()
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
