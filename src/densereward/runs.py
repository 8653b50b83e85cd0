"""``densereward run``: a run recipe end to end — methods x seeds in parallel on Ray, one folder.

A run recipe names a world, a trainer, seeds and the methods to compare; each method is a reward
pipeline (signals, transforms, estimator)::

    name: doorkey-5x5
    world: {env_id: MiniGrid-DoorKey-5x5-v0}
    trainer: {kind: ppo, total_steps: 60000, learning_rate: 0.001}
    seeds: [0, 1, 2]
    estimator: {kind: gae, gamma: 0.99, lam: 0.95}      # shared by methods unless they set one
    methods:
      sparse: {}
      progress_potential:
        signals: {potential: {kind: progress_model}}
        transforms: [{kind: potential, potential: potential}]

The run folder holds ``config.yaml`` (resolved), ``metrics.parquet`` (one row per update per run),
``checkpoints/``, ``success_rate.png``, ``true_return.png`` and ``report.md``. It is written to a
temporary folder first and renamed when complete, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import os
import platform
import shutil
import tempfile
import time
import typing
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

from densereward.core.errors import ConfigError, DenseRewardError
from densereward.core.registry import coerce, lookup
from densereward.pipeline import Pipeline, Recipe, check_keys, load_yaml
from densereward.signals.base import SignalContext
from densereward.trainers.grpo import GRPOConfig, GRPOResult, train_grpo
from densereward.trainers.ppo import PPOConfig, train_ppo
from densereward.worlds.reasoning.world import WORLD_MODELS, ReasoningWorld, ReasoningWorldConfig

RUN_KEYS = (
    "name",
    "description",
    "world",
    "trainer",
    "seeds",
    "estimator",
    "methods",
    "success_threshold",
)
RECIPES = Path(__file__).resolve().parent / "recipes"
DEFAULT_RUN = "doorkey"


def resolve_recipe(name_or_path: str | Path) -> Path:
    """A recipe file: a path, or the name of one shipped in ``densereward/recipes``."""
    path = Path(name_or_path)
    if path.exists() or path.suffix in (".yaml", ".yml"):
        return path
    builtin = RECIPES / f"{name_or_path}.yaml"
    if builtin.exists():
        return builtin
    known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.yaml")))
    raise ConfigError(
        str(name_or_path), f"no such recipe file or built-in recipe (built-in: {known})"
    )


@dataclass(frozen=True)
class RunRecipe:
    name: str
    description: str
    trainer: PPOConfig | GRPOConfig
    seeds: tuple[int, ...]
    methods: dict[str, Recipe]
    success_threshold: float = 0.9
    world: ReasoningWorldConfig | None = None
    """Set for the reasoning world (GRPO on a causal LM); control worlds live in ``trainer``."""

    @property
    def is_reasoning(self) -> bool:
        return self.world is not None

    @property
    def progress_column(self) -> str:
        """The x-axis of every curve: environment steps (control) or training samples."""
        return "samples" if self.is_reasoning else "env_steps"

    @property
    def budget(self) -> int:
        if isinstance(self.trainer, GRPOConfig):
            t = self.trainer
            return t.updates * t.prompts_per_update * t.group_size
        updates = max(
            1, self.trainer.total_steps // (self.trainer.num_steps * self.trainer.num_envs)
        )
        return updates * self.trainer.num_steps * self.trainer.num_envs

    @property
    def world_label(self) -> str:
        if self.world is not None:
            return f"reasoning ({', '.join(self.world.families)}, {self.world.architecture})"
        assert isinstance(self.trainer, PPOConfig)
        return self.trainer.env_id

    def with_length(self, length: int) -> RunRecipe:
        """The same recipe trained for ``length`` environment steps (PPO) or updates (GRPO)."""
        if isinstance(self.trainer, GRPOConfig):
            return dataclasses.replace(
                self, trainer=dataclasses.replace(self.trainer, updates=length)
            )
        return dataclasses.replace(
            self, trainer=dataclasses.replace(self.trainer, total_steps=length)
        )

    @staticmethod
    def from_dict(data: Any, source: str = "recipe") -> RunRecipe:
        data = check_keys(data, RUN_KEYS, source, "run-recipe")
        world = data.get("world") or {}
        trainer = dict(data.get("trainer") or {})
        reasoning: ReasoningWorldConfig | None = None
        config: PPOConfig | GRPOConfig
        if isinstance(world, Mapping) and world.get("kind") == "reasoning":
            if trainer.pop("kind", "grpo") != "grpo":
                raise ConfigError(
                    f"{source}: trainer.kind", "the reasoning world trains with 'grpo'"
                )
            world_values = _typed_fields(
                ReasoningWorldConfig,
                {k: v for k, v in world.items() if k != "kind"},
                f"{source}: world",
                "reasoning-world",
                (),
            )
            try:
                reasoning = ReasoningWorldConfig(**world_values)
                reasoning.spec  # noqa: B018 - validates the families and difficulty
            except (ValueError, KeyError) as error:
                raise ConfigError(f"{source}: world", str(error).strip("'\"")) from None
            values = _typed_fields(GRPOConfig, trainer, f"{source}: trainer", "GRPO", ("seed",))
            # One response length: the reward models learn on the world's samples, so RL samples
            # of another length would be scored off their training distribution.
            length = values.setdefault("max_new_tokens", reasoning.max_new_tokens)
            if length != reasoning.max_new_tokens:
                raise ConfigError(
                    f"{source}: trainer.max_new_tokens",
                    f"{length} differs from world.max_new_tokens ({reasoning.max_new_tokens}); "
                    "set the response length once, in the world",
                )
            try:
                config = GRPOConfig(**values)
            except ValueError as error:
                raise ConfigError(f"{source}: trainer", str(error)) from None
        else:
            if not isinstance(world, Mapping) or "env_id" not in world or set(world) - {"env_id"}:
                raise ConfigError(
                    f"{source}: world", "must be {env_id: <Gymnasium id>} or {kind: reasoning}"
                )
            if trainer.pop("kind", "ppo") != "ppo":
                raise ConfigError(f"{source}: trainer.kind", "only 'ppo' exists for control worlds")
            values = _typed_fields(
                PPOConfig, trainer, f"{source}: trainer", "PPO", ("env_id", "seed")
            )
            for key in (
                "total_steps",
                "num_envs",
                "num_steps",
                "num_minibatches",
                "update_epochs",
                "torch_threads",
            ):
                if key in values and values[key] <= 0:
                    raise ConfigError(
                        f"{source}: trainer.{key}", f"must be positive, got {values[key]}"
                    )
            config = PPOConfig(env_id=str(world["env_id"]), **values)
            _check_world(config.env_id, f"{source}: world.env_id")
        seeds = coerce(data.get("seeds", [0]), list[int], f"{source}: seeds")
        if not seeds:
            raise ConfigError(f"{source}: seeds", "name at least one seed")
        methods_spec = data.get("methods")
        if not isinstance(methods_spec, Mapping) or not methods_spec:
            raise ConfigError(f"{source}: methods", "name at least one method")
        estimator = data.get("estimator", {"kind": "grpo" if reasoning else "gae"})
        methods = {}
        for name, spec in methods_spec.items():
            if spec is not None and not isinstance(spec, Mapping):
                raise ConfigError(
                    f"{source}: methods.{name}", "must be a mapping (a recipe), or {}"
                )
            spec = dict(spec or {})
            spec.setdefault("estimator", estimator)
            spec.setdefault("name", str(name))
            methods[str(name)] = Recipe.from_dict(spec, f"{source}: methods.{name}")
            if reasoning is None and getattr(
                lookup("estimator", spec["estimator"]["kind"]).cls, "selects_trajectories", False
            ):
                raise ConfigError(
                    f"{source}: methods.{name}.estimator",
                    "selects trajectories, which only the reasoning world's GRPO trainer supports",
                )
            unknown = [m for m in world_models(methods[str(name)]) if m not in WORLD_MODELS]
            if reasoning is not None and unknown:
                raise ConfigError(
                    f"{source}: methods.{name}.signals",
                    f"model {unknown[0]!r} is not one the reasoning world trains "
                    f"(known: {', '.join(WORLD_MODELS)})",
                )
        threshold = coerce(
            data.get("success_threshold", 0.9), float, f"{source}: success_threshold"
        )
        return RunRecipe(
            str(data.get("name", Path(source).stem)),
            str(data.get("description", "")),
            config,
            tuple(seeds),
            methods,
            threshold,
            reasoning,
        )

    @staticmethod
    def from_yaml(path: str | Path) -> RunRecipe:
        return RunRecipe.from_dict(load_yaml(path), str(path))

    def resolved(self) -> dict[str, Any]:
        world = (
            {"world": {"kind": "reasoning", **dataclasses.asdict(self.world)}}
            if self.world is not None
            else {}
        )
        kind = "grpo" if self.is_reasoning else "ppo"
        return {
            "name": self.name,
            "description": self.description,
            **world,
            "trainer": {"kind": kind, **dataclasses.asdict(self.trainer)},
            "seeds": list(self.seeds),
            "success_threshold": self.success_threshold,
            "methods": {name: _resolved_recipe(recipe) for name, recipe in self.methods.items()},
        }


def _typed_fields(
    kind: Any, given: Mapping[str, Any], where: str, what: str, hidden: tuple[str, ...]
) -> dict[str, Any]:
    """Coerce ``given`` to the dataclass ``kind``'s field types; unknown keys are errors."""
    hints = typing.get_type_hints(kind)
    fields = [f.name for f in dataclasses.fields(kind) if f.name not in hidden]
    values = {}
    for key, value in given.items():
        if key not in fields:
            raise ConfigError(
                f"{where}.{key}", f"unknown {what} parameter (known: {', '.join(fields)})"
            )
        values[key] = coerce(value, hints[key], f"{where}.{key}")
    return values


def _check_world(env_id: str, where: str) -> None:
    """Make the environment once now, so a bad id fails at load time and not inside a worker."""
    from densereward.worlds.control.envs import make_env

    try:
        make_env(env_id).close()
    except ConfigError as error:
        raise ConfigError(where, error.problem) from None


def _resolved_recipe(recipe: Recipe) -> dict[str, Any]:
    """Every component with every parameter, defaults included."""
    signals, transforms, estimator = recipe.build()

    def spec(component: Any) -> dict[str, Any]:
        fields = {
            f.name: getattr(component, f.name) for f in dataclasses.fields(component) if f.init
        }
        return {"kind": component.component_name, **fields}

    return {
        "signals": {name: spec(s) for name, s in signals.items()},
        "transforms": [spec(t) for t in transforms],
        "estimator": spec(estimator),
    }


# ----------------------------------------------------------------------------- one run
def run_one(
    method: str,
    recipe: Recipe,
    config: PPOConfig,
    seed: int,
    report: Callable[[int], None] | None = None,
) -> tuple[list[dict[str, Any]], bytes, float]:
    """Train one (method, seed); returns metrics rows, the policy checkpoint and the wall time."""
    from densereward.worlds.control.expert import demonstrations

    start = time.perf_counter()
    config = dataclasses.replace(config, seed=seed)
    pipeline = Pipeline(recipe)
    # Demonstrations come from seeds the training environments never use.
    pipeline.prepare(
        SignalContext(seed, lambda n: demonstrations(config.env_id, n, 1_000_000 + seed * n))
    )
    result = train_ppo(config, pipeline, (lambda row: report(row["env_steps"])) if report else None)
    buffer = io.BytesIO()
    assert result.agent is not None
    torch.save(result.agent.state_dict(), buffer)
    rows = [{"method": method, "seed": seed, **row} for row in result.metrics]
    return rows, buffer.getvalue(), time.perf_counter() - start


def world_models(recipe: Recipe) -> list[str]:
    """Reward models a method's signals name (``model: prm_mc``...), which the world trains."""
    signals, _, _ = recipe.build()
    names = [getattr(signal, "model", None) for signal in signals.values()]
    return [n for n in names if n and n not in ("policy", "reference")]


def train_from_sft(
    world: ReasoningWorld,
    config: GRPOConfig,
    recipe: Recipe,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> GRPOResult:
    """GRPO with ``recipe`` on a copy of the world's SFT policy, with the reward models its
    signals name (trained once per world)."""
    models = world.models(world_models(recipe))
    return train_grpo(
        config,
        copy.deepcopy(world.policy),
        world.tokenizer,
        world.train_problems,
        world.eval_set,
        recipe,
        models,
        progress,
    )


def run_reasoning_seed(
    recipe: RunRecipe,
    seed: int,
    report: Callable[[str, int], None] | None = None,
) -> dict[tuple[str, int], tuple[list[dict[str, Any]], bytes, float]]:
    """Every method on one seed of the reasoning world: the SFT policy and the reward models are
    built once per seed and shared; each method trains its own copy of the policy."""
    assert recipe.world is not None and isinstance(recipe.trainer, GRPOConfig)
    world = ReasoningWorld.build(recipe.world, seed)
    config = dataclasses.replace(recipe.trainer, seed=seed)
    out = {}
    for method, method_recipe in recipe.methods.items():
        start = time.perf_counter()

        def progress(row: dict[str, float], method: str = method) -> None:
            if report is not None:
                report(method, int(row["samples"]))

        result = train_from_sft(world, config, method_recipe, progress)
        buffer = io.BytesIO()
        torch.save(result.policy.state_dict(), buffer)
        rows = [{"method": method, "seed": seed, **row} for row in result.metrics]
        out[(method, seed)] = (rows, buffer.getvalue(), time.perf_counter() - start)
    return out


# ----------------------------------------------------------------------------- many runs
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
    jobs = [(m, s) for m in recipe.methods for s in recipe.seeds]
    results: dict[tuple[str, int], tuple[list[dict[str, Any]], bytes, float]] = {}
    started = time.perf_counter()
    with _Progress(jobs, recipe.budget, enabled=progress) as bars:
        if recipe.is_reasoning and local:
            for seed in recipe.seeds:

                def report_method(method: str, samples: int, seed: int = seed) -> None:
                    bars.update((method, seed), samples)

                results.update(run_reasoning_seed(recipe, seed, report_method))
        elif local:
            for method, seed in jobs:

                def report(steps: int, job: tuple[str, int] = (method, seed)) -> None:
                    bars.update(job, steps)

                assert isinstance(recipe.trainer, PPOConfig)
                results[(method, seed)] = run_one(
                    method, recipe.methods[method], recipe.trainer, seed, report
                )
        else:
            results = _execute_on_ray(recipe, jobs, bars, ray_address)
    wall = time.perf_counter() - started
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=_parent(out)))
    try:
        _write_run_folder(staging, recipe, results, wall, ray_address, local)
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(staging, 0o777 & ~mask)  # mkdtemp made it private
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent


def _execute_on_ray(
    recipe: RunRecipe, jobs: list[tuple[str, int]], bars: _Progress, address: str | None
) -> dict[tuple[str, int], tuple[list[dict[str, Any]], bytes, float]]:
    import logging

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
            self.steps: dict[str, int] = {}

        def report(self, key: str, steps: int) -> None:
            self.steps[key] = steps

        def snapshot(self) -> dict[str, int]:
            return self.steps

    @ray.remote(num_cpus=1)
    def remote_run(
        method: str, recipe_dict: dict[str, Any], config: PPOConfig, seed: int, board: Any
    ):
        job = Recipe.from_dict(recipe_dict)
        return run_one(
            method, job, config, seed, lambda steps: board.report.remote(f"{method}/{seed}", steps)
        )

    @ray.remote(num_cpus=1)
    def remote_reasoning_seed(run_recipe: RunRecipe, seed: int, board: Any):
        def report(method: str, samples: int) -> None:
            board.report.remote(f"{method}/{seed}", samples)

        return run_reasoning_seed(run_recipe, seed, report)

    try:
        board = Board.remote()  # type: ignore[attr-defined]
        pending: dict[Any, Any]
        if recipe.is_reasoning:
            # one task per seed: its methods share the SFT policy and reward models
            pending = {remote_reasoning_seed.remote(recipe, s, board): s for s in recipe.seeds}
        else:
            pending = {
                remote_run.remote(m, _recipe_dict(recipe.methods[m]), recipe.trainer, s, board): (  # type: ignore[arg-type]
                    m,
                    s,
                )
                for m, s in jobs
            }
        results = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for key, steps in ray.get(board.snapshot.remote()).items():
                method, seed = key.rsplit("/", 1)
                bars.update((method, int(seed)), steps)
            for reference in done:
                key = pending.pop(reference)
                try:
                    if recipe.is_reasoning:
                        finished = ray.get(reference)
                        results.update(finished)
                        for job in finished:
                            bars.finish(job)
                        continue
                    results[key] = ray.get(reference)
                except ray.exceptions.RayTaskError as error:
                    # A user error inside a worker (a bad annotator address, say) is still one
                    # line for the user, not a remote traceback.
                    cause = getattr(error, "cause", None)
                    if isinstance(cause, DenseRewardError):
                        raise cause from None
                    raise
                bars.finish(key)
        return results
    finally:
        ray.shutdown()


def _recipe_dict(recipe: Recipe) -> dict[str, Any]:
    data = recipe.to_dict()
    return {k: v for k, v in data.items() if v or k == "estimator"}


class _Progress:
    """Rich progress bars, one per (method, seed), fed by step counts."""

    def __init__(self, jobs: list[tuple[str, int]], budget: int, enabled: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.enabled = enabled
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
            job: self.progress.add_task(f"{job[0]} seed {job[1]}", total=budget) for job in jobs
        }

    def __enter__(self) -> _Progress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def update(self, job: tuple[str, int], steps: int) -> None:
        self.progress.update(self.tasks[job], completed=min(steps, self.budget))

    def finish(self, job: tuple[str, int]) -> None:
        self.progress.update(self.tasks[job], completed=self.budget)


# ----------------------------------------------------------------------------- the folder
def _write_run_folder(
    folder: Path,
    recipe: RunRecipe,
    results: dict,
    wall: float,
    ray_address: str | None,
    local: bool,
) -> None:
    config = recipe.resolved()
    config["execution"] = {
        "ray_address": ray_address or ("none (sequential)" if local else "local"),
        "wall_seconds": round(wall, 1),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "cpus": os.cpu_count(),
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    rows = [
        row
        for method in recipe.methods
        for seed in recipe.seeds
        for row in results[(method, seed)][0]
    ]
    # methods log different reward components: every column, missing values null (from_pylist
    # would take the schema from the first row alone and drop the rest)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    table = pa.Table.from_pylist([{key: row.get(key) for key in columns} for row in rows])
    pq.write_table(table, folder / "metrics.parquet")
    (folder / "checkpoints").mkdir()
    for (method, seed), (_, checkpoint, _) in results.items():
        (folder / "checkpoints" / f"{method}-seed{seed}.pt").write_bytes(checkpoint)
    times = {key: value[2] for key, value in results.items()}
    if recipe.is_reasoning:
        plot_curves(rows, recipe, "eval_accuracy", "held-out accuracy", folder / "accuracy.png")
        plot_curves(rows, recipe, "response_tokens", "response tokens", folder / "length.png")
        (folder / "report.md").write_text(
            report_reasoning_markdown(recipe, rows, times, wall), encoding="utf-8"
        )
        return
    summary = summarize(rows, recipe)
    plot_curves(rows, recipe, "success_rate", "success rate", folder / "success_rate.png")
    plot_curves(rows, recipe, "true_return", "true (unshaped) return", folder / "true_return.png")
    (folder / "report.md").write_text(
        report_markdown(recipe, summary, times, wall), encoding="utf-8"
    )


def smoothed(values: np.ndarray, window: int = 5) -> np.ndarray:
    """Trailing mean over the last ``window`` updates that finished an episode (NaN-aware)."""
    out = np.full(values.shape, np.nan)
    for i in range(values.shape[0]):
        recent = values[max(0, i - window + 1) : i + 1]
        recent = recent[~np.isnan(recent)]
        out[i] = recent.mean() if recent.size else (out[i - 1] if i else np.nan)
    return out


def summarize(rows: list[dict[str, Any]], recipe: RunRecipe) -> dict[str, dict[str, Any]]:
    """Per method: final success/return (last 10 % of updates) and steps to the success threshold."""
    summary: dict[str, dict[str, Any]] = {}
    for method in recipe.methods:
        finals, returns, reached = [], [], []
        for seed in recipe.seeds:
            run = [r for r in rows if r["method"] == method and r["seed"] == seed]
            success = smoothed(np.array([r["success_rate"] for r in run], dtype=float))
            true_return = np.array([r["true_return"] for r in run], dtype=float)
            steps = np.array([r["env_steps"] for r in run])
            tail = max(1, len(run) // 10)
            finals.append(
                np.nanmean(success[-tail:]) if np.any(~np.isnan(success[-tail:])) else 0.0
            )
            returns.append(
                np.nanmean(true_return[-tail:]) if np.any(~np.isnan(true_return[-tail:])) else 0.0
            )
            hit = np.flatnonzero(success >= recipe.success_threshold)
            reached.append(float(steps[hit[0]]) if hit.size else float("inf"))
        summary[method] = {
            "final_success": np.array(finals),
            "final_return": np.array(returns),
            "steps_to_threshold": np.array(reached),
        }
    return summary


def plot_curves(
    rows: list[dict[str, Any]], recipe: RunRecipe, metric: str, label: str, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=120)
    for method in recipe.methods:
        curves = []
        for seed in recipe.seeds:
            run = [
                r
                for r in rows
                if r["method"] == method and r["seed"] == seed and r.get(metric) is not None
            ]
            steps = np.array([r[recipe.progress_column] for r in run])
            values = np.array([r[metric] for r in run], dtype=float)
            curves.append(values if recipe.is_reasoning else smoothed(values))
        stacked = np.vstack(curves)
        with warnings.catch_warnings():  # early updates may have no finished episode in any seed
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, spread = np.nanmean(stacked, 0), np.nanstd(stacked, 0)
        axes.plot(steps, mean, label=f"{method} ({len(recipe.seeds)} seeds)")
        low, high = mean - spread, mean + spread
        if metric in ("success_rate", "eval_accuracy"):
            low, high = np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)
        axes.fill_between(steps, low, high, alpha=0.2)
    axes.set_xlabel("training samples" if recipe.is_reasoning else "environment steps")
    axes.set_ylabel(label)
    axes.set_title(f"{recipe.name}: {recipe.world_label}")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def report_markdown(
    recipe: RunRecipe,
    summary: dict[str, dict[str, Any]],
    times: dict[tuple[str, int], float],
    wall: float,
) -> str:
    threshold = recipe.success_threshold
    baseline = next(iter(recipe.methods))
    budget = recipe.budget

    def steps_text(values: np.ndarray) -> str:
        reached = values[np.isfinite(values)]
        median = np.median(values) if reached.size * 2 > values.size else float("inf")
        head = f"{median:,.0f}" if np.isfinite(median) else f"> {budget:,}"
        return f"{head} ({reached.size}/{values.size} reached)"

    lines = [
        f"# {recipe.name}",
        "",
        recipe.description.strip(),
        "",
        f"World `{recipe.world_label}`, PPO for {budget:,} environment steps per run, seeds "
        f"{', '.join(map(str, recipe.seeds))}. Wall time {wall:.0f} s. Success and return are the "
        "environment's own (unshaped) ones, smoothed over 5 updates; *final* is the mean over the "
        f"last 10 % of updates; *steps to {threshold:.0%}* is the median over seeds of the first "
        f"step where the smoothed success rate reaches {threshold:.0%}.",
        "",
        f"| method | final success | final true return | steps to {threshold:.0%} success | vs {baseline} | minutes per run |",
        "|---|---|---|---|---|---|",
    ]
    base = np.median(summary[baseline]["steps_to_threshold"])
    for method, row in summary.items():
        mine = np.median(row["steps_to_threshold"])
        ratio = f"{mine / base:.2f}x steps" if np.isfinite(mine) and np.isfinite(base) else "-"
        minutes = np.mean([times[(method, s)] for s in recipe.seeds]) / 60
        lines.append(
            f"| {method} | {row['final_success'].mean():.2f} ± {row['final_success'].std():.2f} | "
            f"{row['final_return'].mean():.3f} ± {row['final_return'].std():.3f} | "
            f"{steps_text(row['steps_to_threshold'])} | {ratio} | {minutes:.1f} |"
        )
    lines += [
        "",
        "![success rate](success_rate.png)",
        "",
        "![true return](true_return.png)",
        "",
        "Files: `config.yaml` (resolved recipe), `metrics.parquet` (one row per update per run), "
        "`checkpoints/` (policy weights per run).",
        "",
    ]
    return "\n".join(lines)


def report_reasoning_markdown(
    recipe: RunRecipe,
    rows: list[dict[str, Any]],
    times: dict[tuple[str, int], float],
    wall: float,
) -> str:
    """Accuracy per method, and samples to reach the first method's final accuracy."""
    baseline = next(iter(recipe.methods))

    def curve(method: str, seed: int) -> list[tuple[float, float]]:
        return [
            (r["samples"], r["eval_accuracy"])
            for r in rows
            if r["method"] == method and r["seed"] == seed and r.get("eval_accuracy") is not None
        ]

    def mean_curve(method: str) -> list[tuple[float, float]]:
        runs = [curve(method, s) for s in recipe.seeds]
        return [
            (runs[0][i][0], float(np.mean([run[i][1] for run in runs])))
            for i in range(len(runs[0]))
        ]

    def to_reach(points: list[tuple[float, float]], target: float) -> float:
        return next((n for n, value in points if value >= target - 1e-9), float("inf"))

    target = mean_curve(baseline)[-1][1]
    base = to_reach(mean_curve(baseline), target)
    lines = [
        f"# {recipe.name}",
        "",
        recipe.description.strip(),
        "",
        f"World `{recipe.world_label}`, GRPO for {recipe.budget:,} training samples per run, "
        f"seeds {', '.join(map(str, recipe.seeds))}. Wall time {wall:.0f} s. Accuracy is the exact "
        "verifier's on held-out problems, averaged over 4 samples per problem at temperature 1 "
        "(mean over seeds). *Samples to target*: first evaluation at which the method reaches "
        f"{baseline}'s final accuracy ({target:.3f}).",
        "",
        f"| method | start accuracy | final accuracy | samples to target | vs {baseline} | minutes per run |",
        "|---|---|---|---|---|---|",
    ]
    for method in recipe.methods:
        points = mean_curve(method)
        finals = [curve(method, s)[-1][1] for s in recipe.seeds]
        need = to_reach(points, target)
        ratio = f"{need / base:.2f}x" if np.isfinite(need) and base > 0 else "-"
        minutes = np.mean([times[(method, s)] for s in recipe.seeds]) / 60
        reach = f"{need:,.0f}" if np.isfinite(need) else f"> {recipe.budget:,}"
        lines.append(
            f"| {method} | {points[0][1]:.3f} | {np.mean(finals):.3f} ± {np.std(finals):.3f} | "
            f"{reach} | {ratio} | {minutes:.1f} |"
        )
    lines += [
        "",
        "![held-out accuracy](accuracy.png)",
        "",
        "![response length](length.png)",
        "",
        "Files: `config.yaml` (resolved recipe), `metrics.parquet` (one row per update per run: "
        "accuracy, every reward component, response length, KL), `checkpoints/` (policy weights).",
        "",
    ]
    return "\n".join(lines)
