"""``densereward run``: a run recipe end to end — methods x seeds, one folder.

World-agnostic: the world comes from the registry (``recipe``), every unit of work runs through
one function here or on Ray (``executor``), and the folder (``folder``) and its report
(``report``) ask the world for what is its own.
"""

from __future__ import annotations

import time
from pathlib import Path

from densereward.core.errors import ConfigError
from densereward.runs.executor import run_jobs
from densereward.runs.folder import write_run_folder
from densereward.runs.recipe import DEFAULT_RUN, RECIPES, RunRecipe, resolve_recipe


def execute(
    recipe: RunRecipe,
    out: Path | None = None,
    ray_address: str | None = None,
    local: bool = False,
    progress: bool = True,
) -> Path:
    """Run every (method, seed), write the run folder, return its path."""
    out = out or Path("runs") / f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists():
        raise ConfigError("--out", f"{out} already exists; choose a new folder")
    started = time.perf_counter()
    results = run_jobs(recipe, local, ray_address, progress)
    execution = ray_address or ("none (sequential)" if local else "local")
    write_run_folder(out, recipe, results, time.perf_counter() - started, execution)
    return out


__all__ = ["DEFAULT_RUN", "RECIPES", "RunRecipe", "execute", "resolve_recipe"]
