"""``densereward run``: a run recipe end to end — methods x seeds, one folder.

World-agnostic: the world comes from the registry (``recipe``), every unit of work runs through
one function here or on Ray (``executor``), and the folder (``folder``) and its report
(``report``) ask the world for what is its own.
"""

from __future__ import annotations

import time
from pathlib import Path

from densereward.core.errors import ConfigError, DenseRewardError, Interrupted
from densereward.runs.executor import run_jobs
from densereward.runs.folder import RunFolder
from densereward.runs.recipe import DEFAULT_RUN, RECIPES, RunRecipe, resolve_recipe


def execute(
    recipe: RunRecipe,
    out: Path | None = None,
    ray_address: str | None = None,
    local: bool = False,
    progress: bool = True,
    resume: Path | None = None,
) -> Path:
    """Run every (method, seed), committing each to the run folder as it finishes; return the
    folder. An unfinished run of the same recipe in ``out`` (or ``resume``, which must exist) is
    continued: its finished pairs are kept, the rest are run."""
    if resume is not None and out is not None and Path(resume) != Path(out):
        raise ConfigError("--resume", "give the run folder once: --resume DIR or --out DIR")
    path = resume or out or Path("runs") / f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder = RunFolder.open(path, recipe, resume=resume is not None)
    try:
        done = folder.finished()
        started = time.perf_counter()
        total = len(recipe.methods) * len(recipe.seeds)
        try:
            run_jobs(recipe, local, ray_address, progress, set(done), folder.commit)
        except KeyboardInterrupt:
            raise Interrupted(
                f"interrupted: {folder.committed()} of {total} runs are committed to {path}; "
                f"'densereward run ... --resume {path}' finishes the rest"
            ) from None
        except Exception as error:
            kept = folder.committed()
            if not kept:  # nothing finished: no folder is left behind
                folder.remove()
            elif isinstance(error, DenseRewardError):
                # the same error (its type is what callers catch), saying what was kept
                error.args = (
                    f"{error}; {kept} of {total} runs finished and are kept in {path} "
                    f"('densereward run ... --resume {path}' runs the rest once the cause is fixed)",
                )
            raise
        # the run's files are built from the committed pairs, read back, whether or not the run
        # was resumed: an uninterrupted run and a resumed one write the same tables by construction
        results = folder.finished()
        assert set(results) == {(m, s) for m in recipe.methods for s in recipe.seeds}
        execution = {
            "ray_address": ray_address or ("none (sequential)" if local else "local"),
            "resumed_with": len(done),
        }
        folder.complete(results, time.perf_counter() - started, execution)
    finally:
        folder.close()
    return path


__all__ = ["DEFAULT_RUN", "RECIPES", "RunRecipe", "execute", "resolve_recipe"]
