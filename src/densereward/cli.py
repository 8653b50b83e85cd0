"""The ``densereward`` command.

User errors (bad files, bad recipes, unknown components) print one line on stderr and exit 2,
with no traceback and no partial output.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
import torch
import typer
import yaml
from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from rich.table import Table

from densereward.core.components import World
from densereward.core.errors import DenseRewardError, Interrupted
from densereward.core.registry import KINDS, components
from densereward.core.trajectories import Trajectories
from densereward.io import Format, read_trajectories, write_trajectories
from densereward.pipeline import Pipeline, Recipe
from densereward.runs import DEFAULT_RUN, RECIPES, RunRecipe, execute, resolve_recipe
from densereward.runs.recipe import check_seeds

app = typer.Typer(
    name="densereward",
    help="Dense, safe step-level rewards from sparse or untrustworthy ones.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(function: F) -> F:
    """Turn a ``DenseRewardError`` (or an unreadable path) into one line and exit code 2, and
    Ctrl-C into one line and 130."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Interrupted as error:
            errors.print(str(error), markup=False)
            raise typer.Exit(130) from None
        except KeyboardInterrupt:
            errors.print("interrupted: nothing was written", markup=False)
            raise typer.Exit(130) from None
        except DenseRewardError as error:
            errors.print(f"error: {error}", markup=False)
            raise typer.Exit(2) from None
        except (PermissionError, IsADirectoryError) as error:
            errors.print(f"error: {error.filename}: {error.strerror}", markup=False)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _summary_table(batch: Trajectories, title: str) -> Table:
    table = Table(title=title, show_header=False)
    table.add_row("trajectories", str(len(batch)))
    table.add_row("steps", str(batch.num_steps))
    table.add_row("groups", str(batch.groups.count))
    lengths = batch.lengths.to(torch.float64)
    table.add_row("steps per trajectory", f"{lengths.mean():.2f} mean, {int(lengths.max())} max")
    table.add_row("step columns", ", ".join(batch.steps) or "-")
    table.add_row("per-trajectory columns", ", ".join(batch.episodes) or "-")
    if batch.outcome is not None:
        table.add_row("outcome mean", f"{float(batch.outcome.double().mean()):.4f}")
    if batch.token_spans is not None:
        table.add_row("token spans", "yes")
    if batch.parent is not None:
        table.add_row("tree", f"{int((batch.parent == -1).sum())} roots")
    return table


@app.command()
@user_errors
def shape(
    input: Annotated[Path, typer.Argument(help="Trajectories: .jsonl, .parquet or TRL stepwise.")],
    recipe: Annotated[str, typer.Option("--recipe", "-r", help="Recipe YAML, or a built-in name.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (.jsonl or .parquet).")],
    input_format: Annotated[
        str, typer.Option("--format", help="auto, jsonl, parquet or trl.")
    ] = "auto",
    out_format: Annotated[
        str, typer.Option("--out-format", help="auto, jsonl, parquet or trl.")
    ] = "auto",
    iteration: Annotated[
        int, typer.Option(help="Training iteration, for annealed transforms.")
    ] = 0,
) -> None:
    """Apply a recipe's transforms and estimator to a file of trajectories."""
    input_kind, out_kind = _format(input_format, "--format"), _format(out_format, "--out-format")
    if iteration < 0:
        raise DenseRewardError(f"--iteration: must be >= 0, got {iteration}")
    recipe_path = resolve_recipe(recipe)
    _check_output(out, {"input file": input, "recipe": recipe_path})
    pipeline = Pipeline.from_yaml(recipe_path)
    batch = read_trajectories(input, input_kind)
    result = pipeline(batch, iteration)
    write_trajectories(result.trajectories, out, out_kind)
    console.print(_summary_table(batch, f"{input}"))
    stages = Table(title=f"recipe '{pipeline.recipe.name}'")
    for column in ("stage", "column", "mean", "std", "min", "max"):
        stages.add_column(column, justify="right" if column not in ("stage", "column") else "left")
    for row in result.diagnostics:
        stages.add_row(
            row.stage,
            row.column,
            *(f"{v:.4f}" for v in (row.mean, row.std, row.minimum, row.maximum)),
        )
    console.print(stages)
    console.print(f"wrote {len(batch)} trajectories with 'advantage' and 'return' to {out}")


def _check_output(out: Path, inputs: dict[str, Path]) -> None:
    """``--out`` must not be one of the command's own inputs (the same file by any path,
    symbolic links and hard links included), nor an existing folder."""
    if out.is_dir():
        raise DenseRewardError(f"--out {out}: is a folder; name a file")
    for what, path in inputs.items():
        same = out.resolve() == path.resolve()
        if not same and out.exists() and path.exists():
            same = out.samefile(path)
        if same:
            raise DenseRewardError(f"--out {out}: is the {what}; refusing to overwrite it")


def _format(value: str, option: str) -> Format:
    if value not in ("auto", "jsonl", "parquet", "trl"):
        raise DenseRewardError(f"{option}: unknown format {value!r} (auto, jsonl, parquet, trl)")
    return value  # type: ignore[return-value]


@app.command()
@user_errors
def validate(
    input: Annotated[Path, typer.Argument(help="Trajectories file to check.")],
    input_format: Annotated[
        str, typer.Option("--format", help="auto, jsonl, parquet or trl.")
    ] = "auto",
) -> None:
    """Check a trajectories file against the data model; print a summary or the first error."""
    batch = read_trajectories(input, _format(input_format, "--format"))
    console.print(_summary_table(batch, f"{input}: valid"))


@app.command()
@user_errors
def compare(
    input: Annotated[
        Path | None, typer.Argument(help="Trajectories file with reward columns.")
    ] = None,
    rewards: Annotated[
        str | None, typer.Option(help="Comma-separated step columns to compare.")
    ] = None,
    features: Annotated[str, typer.Option(help="Step column of state features, for V(s).")] = "obs",
    gamma: Annotated[float, typer.Option(help="Discount.")] = 0.99,
    order: Annotated[int, typer.Option(help="Norm for STARC: 1 or 2.")] = 2,
    demo: Annotated[
        bool, typer.Option(help="Compare rewards on a random tabular MDP instead.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the --demo MDP.")] = 0,
) -> None:
    """Distance matrices between reward functions (STARC, and EPIC for --demo).

    On a file: rollout STARC between reward columns (value fitted by LSTD on --features).
    """
    from densereward.evaluation.records import located
    from densereward.evaluation.reward_distance import (
        demo_rewards,
        epic_distance,
        rollout_distance_matrix,
        starc_distance,
    )

    if order not in (1, 2):
        raise DenseRewardError("--order: must be 1 or 2")
    if not 0.0 <= gamma < 1.0:
        raise DenseRewardError("--gamma: must lie in [0, 1)")
    if demo:
        transition, named = demo_rewards(8, 3, gamma, seed)
        names = list(named)
        for title, metric in (
            ("EPIC (uniform coverage)", lambda a, b: epic_distance(a, b, gamma)),
            (f"STARC (VAL, L{order})", lambda a, b: starc_distance(a, b, transition, gamma, order)),
        ):
            matrix = np.array([[metric(named[a], named[b]) for b in names] for a in names])
            console.print(
                _matrix_table(
                    f"{title}: random MDP, 8 states, 3 actions, seed {seed}", names, matrix
                )
            )
        return
    if input is None or rewards is None:
        raise DenseRewardError("compare: give a trajectories file and --rewards, or --demo")
    names = [name.strip() for name in rewards.split(",") if name.strip()]
    if len(names) < 2:
        raise DenseRewardError("--rewards: name at least two step columns")
    with located(input):
        batch = read_trajectories(input)
        matrix = rollout_distance_matrix(batch, names, features, gamma, order)
    console.print(_matrix_table(f"rollout STARC (L{order}) on {input}", names, matrix))


def _matrix_table(title: str, names: list[str], matrix: np.ndarray) -> Table:
    table = Table(title=title)
    table.add_column("")
    for name in names:
        table.add_column(escape(name), justify="right")
    for name, row in zip(names, matrix, strict=True):
        table.add_row(escape(name), *(f"{value:.3f}" for value in row))
    return table


evaluate_app = typer.Typer(
    help="Score reward models on files: ProcessBench, RewardMATH, RewardBench, best-of-N.",
    no_args_is_help=True,
)
app.add_typer(evaluate_app, name="evaluate")


@evaluate_app.command("processbench")
@user_errors
def evaluate_processbench(
    data: Annotated[list[Path], typer.Argument(help="ProcessBench subset files (JSON or JSONL).")],
    predictions: Annotated[
        Path, typer.Option(help='JSON lines of {"id": ..., "prediction": first wrong step or -1}.')
    ],
) -> None:
    """First-error accuracy on erroneous and correct items, F1 per subset, and the mean F1.

    Every item of every subset needs a prediction naming one of its steps (or -1); predictions
    for ids in none of the subsets are ignored, so one file can serve all subsets.
    """
    from densereward.evaluation.process import processbench_f1, read_predictions, read_processbench

    guesses = read_predictions(predictions)
    scores = [
        (path, processbench_f1(read_processbench(path), guesses, str(predictions), str(path)))
        for path in data
    ]
    table = Table(title=f"ProcessBench: {predictions}")
    for column in ("subset", "items", "acc_err", "acc_corr", "F1"):
        table.add_column(column, justify="right" if column != "subset" else "left")
    for path, score in scores:
        table.add_row(
            escape(path.stem),
            str(score.n_err + score.n_corr),
            f"{100 * score.acc_err:.1f}",
            f"{100 * score.acc_corr:.1f}",
            f"{100 * score.f1:.1f}",
        )
    if len(scores) > 1:
        mean = sum(score.f1 for _, score in scores) / len(scores)
        table.add_row("mean", "", "", "", f"{100 * mean:.1f}")
    console.print(table)


_AGGREGATE_HELP = "How step scores become a solution score: min, product, last, mean, max, sum."


@evaluate_app.command("rewardmath")
@user_errors
def evaluate_rewardmath(
    scores: Annotated[Path, typer.Argument(help="Per-solution scores (correct solution first).")],
    aggregate: Annotated[str, typer.Option(help=_AGGREGATE_HELP)] = "min",
) -> None:
    """RewardMATH accuracy (correct solution above all wrong ones) and MRR."""
    from densereward.evaluation.process import rewardmath_scores

    score = rewardmath_scores(scores, _aggregation(aggregate))
    console.print(
        f"RewardMATH {escape(str(scores))}: {score.n} problems, "
        f"Acc {100 * score.accuracy:.2f}, MRR {100 * score.mrr:.2f}"
    )


@evaluate_app.command("rewardbench")
@user_errors
def evaluate_rewardbench(
    scores: Annotated[Path, typer.Argument(help="Step scores of chosen/rejected solutions.")],
    aggregate: Annotated[str, typer.Option(help=_AGGREGATE_HELP)] = "product",
) -> None:
    """RewardBench pairwise accuracy (ties wrong) with step scores aggregated per solution."""
    from densereward.evaluation.process import rewardbench_pairs

    accuracy, pairs = rewardbench_pairs(scores, _aggregation(aggregate))
    console.print(
        f"RewardBench {escape(str(scores))}: {pairs} pairs, accuracy {100 * accuracy:.1f}"
    )


@evaluate_app.command("best-of-n")
@user_errors
def evaluate_best_of_n(
    input: Annotated[Path, typer.Argument(help="Trajectories file with groups of responses.")],
    score: Annotated[str, typer.Option(help="Step column scored by the reward model.")] = "prm",
    aggregate: Annotated[str, typer.Option(help=_AGGREGATE_HELP)] = "min",
    correct: Annotated[
        str, typer.Option(help="Per-trajectory column: 1 if correct, 0 if not.")
    ] = "outcome",
) -> None:
    """Accuracy of the highest-scored response per group, against the mean accuracy.

    Responses compete within their ``group`` column (all in one group if there is none);
    --correct must be 0 or 1 on every response.
    """
    from densereward.evaluation.process import best_of_n_scores
    from densereward.evaluation.records import located

    how = _aggregation(aggregate)
    with located(input):
        batch = read_trajectories(input)
        picked, mean = best_of_n_scores(batch, score, correct, how)
    console.print(
        f"best-of-N on {escape(str(input))}: {len(batch)} responses, accuracy {100 * picked:.1f} "
        f"(mean response {100 * mean:.1f})"
    )


@evaluate_app.command("judge-robustness")
@user_errors
def evaluate_judge_robustness(
    data: Annotated[
        Path,
        typer.Argument(help="ProcessBench-format items; the correct ones (label -1) are used."),
    ],
    signal: Annotated[
        Path, typer.Option(help="YAML/JSON file of the judge signal, e.g. {kind: judge_step, ...}.")
    ],
    step_tag: Annotated[str, typer.Option(help="What ends a step in a response.")] = "\n",
    answer_mark: Annotated[str, typer.Option(help="What precedes the final answer.")] = "#",
    aggregate: Annotated[str, typer.Option(help=_AGGREGATE_HELP)] = "min",
    threshold: Annotated[
        float, typer.Option(help="A response scoring this or more is judged correct.")
    ] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed the judge signal is bound with.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Write the table as JSON here.")] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Draw FPR per probe and FNR here (PNG).")
    ] = None,
) -> None:
    """False-positive rate of a judge on content-free "master key" responses (One Token to Fool
    LLM-as-a-Judge), the empty response and solutions cut to their first sentence, and its
    false-negative rate on the correct solutions."""
    import json

    from densereward.core.components import SignalContext, TextFormat
    from densereward.core.registry import build
    from densereward.evaluation.process import read_processbench
    from densereward.io.atomic import atomic_path
    from densereward.judges.robustness import (
        CORRECT,
        plot_rows,
        probe_batch,
        robustness_rows,
        score_probes,
        summary,
    )
    from densereward.pipeline import load_yaml

    how = _aggregation(aggregate)
    spec = load_yaml(signal)
    component = build("signal", spec, str(signal))
    text_format = TextFormat(step_tag, answer_mark)
    batch, kinds = probe_batch(read_processbench(data), text_format)
    bound = component.bind(SignalContext(seed=seed, text_format=text_format))
    try:
        scored = score_probes(bound, batch)
    finally:
        close = getattr(bound, "close", None)
        if callable(close):
            close()
    rows = robustness_rows(scored, kinds, "judge", how, threshold)
    table = Table(title=f"judge robustness: {escape(str(signal))} on {escape(str(data))}")
    for column in ("probe", "asked", "judged correct", "rate"):
        table.add_column(column, justify="left" if column == "probe" else "right")
    for row in rows:
        kind = "FNR" if row.probe == CORRECT else "FPR"
        table.add_row(
            repr(row.probe), str(row.asked), str(row.judged_correct), f"{kind} {100 * row.rate:.1f}"
        )
    totals = summary(rows)
    console.print(table)
    console.print(f"mean FPR {100 * totals['mean_FPR']:.1f}, FNR {100 * totals['FNR']:.1f}")
    if out is not None:
        with atomic_path(out) as temporary:
            temporary.write_text(
                json.dumps(
                    {"rows": [r.as_dict() for r in rows], **totals}, ensure_ascii=False, indent=1
                )
            )
    if plot is not None:
        plot_rows({signal.stem: rows}, plot)


def _aggregation(name: str) -> str:
    from densereward.core.segments import AGGREGATIONS

    if name not in AGGREGATIONS:
        raise DenseRewardError(f"--aggregate: unknown {name!r}; known: {', '.join(AGGREGATIONS)}")
    return name


@app.command(name="recipes")
def list_recipes() -> None:
    """The recipes shipped with densereward."""
    for path in sorted(RECIPES.glob("*.yaml")):
        console.print(f"{path.stem:<20} {path}", markup=False)


@app.command(name="components")
@user_errors
def list_components(
    kind: Annotated[str | None, typer.Option(help="Only this kind: " + ", ".join(KINDS))] = None,
) -> None:
    """Every registered component, with its parameters and the paper it implements."""
    if kind is not None and kind not in KINDS:
        raise DenseRewardError(f"--kind: unknown kind {kind!r} (known: {', '.join(KINDS)})")
    table = Table(title="densereward components")
    for column in ("kind", "name", "parameters", "implements"):
        table.add_column(column, overflow="fold")
    for component in components(kind):
        parameters = ", ".join(
            f"{name}: {type_name}" + ("" if default is dataclasses.MISSING else f" = {default!r}")
            for name, type_name, default in component.parameters()
        )
        table.add_row(
            component.kind,
            component.name,
            escape(parameters),
            f"{escape(component.summary)}\n[dim]{escape(component.paper)}[/dim]",
        )
    console.print(table)


@app.command()
@user_errors
def run(
    recipe: Annotated[
        str, typer.Argument(help="Run recipe YAML, or a built-in name.")
    ] = DEFAULT_RUN,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/NAME-TIME).")] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: local).")
    ] = None,
    local: Annotated[
        bool, typer.Option(help="Run sequentially in this process, without Ray.")
    ] = False,
    steps: Annotated[
        int | None,
        typer.Option(
            help="Override the trainer's length (its own unit: total_steps for PPO, updates "
            "for GRPO)."
        ),
    ] = None,
    seeds: Annotated[str | None, typer.Option(help="Override the seeds, e.g. '0,1'.")] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue the unfinished run in this folder (same recipe and overrides): its "
            "finished runs are kept, the rest are run. Rerunning with the same --out does too."
        ),
    ] = None,
) -> None:
    """Run a recipe end to end: every method x seed, then metrics, plots and report.md.

    Each finished (method, seed) is committed to the folder as it finishes; a run killed or
    interrupted at any moment is continued by the same command."""
    import dataclasses

    run_recipe = RunRecipe.from_yaml(resolve_recipe(recipe))
    run_recipe = _with_steps(run_recipe, steps)
    if seeds is not None:
        try:
            chosen = tuple(int(s) for s in seeds.split(",") if s.strip())
        except ValueError:
            raise DenseRewardError(
                f"--seeds: expected integers like '0,1', got {seeds!r}"
            ) from None
        check_seeds(list(chosen), "--seeds")
        run_recipe = dataclasses.replace(run_recipe, seeds=chosen)
    jobs = len(run_recipe.methods) * len(run_recipe.seeds)
    world = run_recipe.world
    console.print(
        f"[bold]{escape(run_recipe.name)}[/bold]: {len(run_recipe.methods)} methods x "
        f"{len(run_recipe.seeds)} seeds = {jobs} runs of {run_recipe.budget:,} "
        f"{world.progress.label} on {escape(world.label())}"
    )
    folder = execute(run_recipe, out, ray_address, local, resume=resume)
    console.print(Markdown((folder / "report.md").read_text(encoding="utf-8")))
    console.print(f"run folder: {folder}")


@app.command()
@user_errors
def serve(
    recipe: Annotated[str, typer.Argument(help="Recipe YAML, or a built-in name.")],
    tokenizer: Annotated[Path, typer.Option(help="Tokenizer folder (save_pretrained).")],
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="NAME=DIR: a process reward model folder, by the name the recipe's signals use "
            "(repeat for several).",
        ),
    ] = None,
    outcome: Annotated[
        str | None,
        typer.Option(help="Outcome function f(prompts, responses, labels), 'module:function'."),
    ] = None,
    step_tag: Annotated[
        str, typer.Option(help="Text that ends a step (\\n and \\t are read as escapes).")
    ] = "\n",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8000,
    max_request_bytes: Annotated[
        int, typer.Option(help="Largest request body accepted (413 above).")
    ] = 1 << 20,
) -> None:
    """Serve a recipe's rewards over OpenRLHF's remote reward protocol (POST /get_reward).

    Point OpenRLHF at it with --reward.remote_url http://HOST:PORT/get_reward. SIGINT or SIGTERM
    stops it gracefully (exit code 0)."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise DenseRewardError(
            f"serve needs {error.name}: pip install 'densereward[serve]'"
        ) from None
    from densereward.adapters.server import serve as serve_scorer
    from densereward.adapters.text import TextScorer

    if not 0 <= port <= 65535:
        raise DenseRewardError(f"--port: must be in 0..65535, got {port}")
    if max_request_bytes < 1:
        raise DenseRewardError(f"--max-request-bytes: must be >= 1, got {max_request_bytes}")
    models: dict[str, Path] = {}
    for entry in model or []:
        name, equals, folder = entry.partition("=")
        if not equals or not name or not folder:
            raise DenseRewardError(f"--model: expected NAME=DIR, got {entry!r}")
        if name in models:
            raise DenseRewardError(f"--model: {name!r} is named twice")
        if not Path(folder).is_dir():
            raise DenseRewardError(f"--model {entry}: {folder} is not a folder")
        models[name] = Path(folder)
    if not tokenizer.is_dir():
        raise DenseRewardError(f"--tokenizer: {tokenizer} is not a folder")
    tag = step_tag.replace("\\n", "\n").replace("\\t", "\t")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # stderr keeps to errors: one line each
    scorer = TextScorer.from_files(
        resolve_recipe(recipe), tokenizer, models=models, outcome=outcome, step_tag=tag
    )

    def ready(bound_host: str, bound_port: int) -> None:
        console.print(
            f"serving recipe '{escape(scorer.recipe.name)}' on "
            f"http://{bound_host}:{bound_port}/get_reward (GET /health)",
            soft_wrap=True,
        )

    serve_scorer(
        scorer, host, port, max_request_bytes=max_request_bytes, log_level="warning", on_ready=ready
    )
    console.print("stopped")


_LOSS_FORMATS = {"bt": "pairs", "bt_ties": "pairs", "plackett_luce": "ranked", "ordinal": "graded"}


@app.command(name="train-rm")
@user_errors
def train_rm(
    data: Annotated[Path, typer.Argument(help="Preference records: JSON, JSON lines or Parquet.")],
    base: Annotated[
        Path, typer.Option(help="Backbone folder (save_pretrained): a causal LM or RM.")
    ],
    out: Annotated[
        Path, typer.Option(help="Folder to write the reward model to (must not exist).")
    ],
    loss: Annotated[str, typer.Option(help="bt, bt_ties, plackett_luce or ordinal.")] = "bt",
    ensemble: Annotated[int, typer.Option(help="Ensemble members (outputs of one head).")] = 1,
    tokenizer: Annotated[
        Path | None, typer.Option(help="Tokenizer folder (default: base's).")
    ] = None,
    format: Annotated[
        str | None, typer.Option(help="pairs, ranked or graded (default: the loss's own).")
    ] = None,
    levels: Annotated[int | None, typer.Option(help="Number of grades (ordinal).")] = None,
    epochs: Annotated[int, typer.Option(help="Most passes over the data.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = 32,
    learning_rate: Annotated[float, typer.Option(help="AdamW's learning rate.")] = 1e-4,
    validation: Annotated[float, typer.Option(help="Share of the data held out.")] = 0.1,
    patience: Annotated[int, typer.Option(help="Epochs without improvement before stopping.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the split, the bootstrap and the head.")] = 0,
) -> None:
    """Train a reward model from preferences: pairs (TRL's chosen/rejected, optional prompt,
    ties with bt_ties), ranked lists (plackett_luce: a pair is a list of two) or grades
    (ordinal). The folder loads with AutoModelForSequenceClassification.from_pretrained, works as
    a TRL reward_funcs model and as the reward_model signal."""
    import json
    import os
    import shutil
    import tempfile

    from rich.progress import Progress

    from densereward.core.errors import ConfigError
    from densereward.evaluation.preferences import plain_render, read_preferences
    from densereward.models.reward_model import (
        build_reward_model,
        load_tokenizer,
        save_head_state,
    )
    from densereward.trainers.reward_model import (
        Comparisons,
        RewardModelConfig,
        train_reward_model,
    )

    config = RewardModelConfig(
        loss, ensemble, epochs, batch_size, learning_rate, validation, patience, seed
    )
    if format is None:
        format = _LOSS_FORMATS[loss]
    if loss in ("bt", "bt_ties") and format != "pairs":
        raise ConfigError("--format", f"loss {loss} trains on pairs, not {format}")
    if loss == "ordinal" and format != "graded":
        raise ConfigError("--format", f"loss ordinal trains on graded records, not {format}")
    if out.exists():
        raise ConfigError("--out", f"{out} exists; choose a new folder")
    if not base.is_dir():
        raise ConfigError("--base", f"{base} is not a folder")
    words = load_tokenizer(tokenizer or base, "--tokenizer" if tokenizer else "--base")
    records = read_preferences(data, format, plain_render(words), loss == "bt_ties", levels)
    grades = None if records.grades is None else np.asarray(records.grades)
    comparisons = Comparisons(
        records.lists,
        None if records.tie is None else np.asarray(records.tie, dtype=bool),
        grades,
        (levels or int(grades.max()) + 1) if grades is not None else None,
    )
    model = build_reward_model(base, words, ensemble)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("training", total=epochs)

        def advance(epoch: int, step: int, info: dict[str, float]) -> None:
            bar.update(task, completed=epoch + step / info["batches"])

        trained = train_reward_model(model, words, comparisons, config, advance)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        trained.model.save_pretrained(str(staging))
        words.save_pretrained(str(staging))
        save_head_state(staging, loss, trained.loss_parameters, {"members": ensemble})
        summary = {
            "loss": loss,
            "members": ensemble,
            "examples": len(comparisons),
            "best_epoch": trained.best_epoch,
            "history": trained.history,
        }
        (staging / "metrics.json").write_text(json.dumps(summary, indent=1))
        os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    best = trained.history[trained.best_epoch - 1] if trained.best_epoch else trained.history[-1]
    shown = ", ".join(f"{k} {v:.4f}" for k, v in best.items() if k != "epoch")
    console.print(
        f"reward model ({loss}, {ensemble} member(s)) -> {out}: epoch {best['epoch']}: {shown}"
    )


@app.command(name="judge-server")
@user_errors
def judge_server(
    model: Annotated[
        Path | None, typer.Argument(help="A causal LM folder (save_pretrained).")
    ] = None,
    tokenizer: Annotated[
        Path | None, typer.Option(help="Tokenizer folder (default: the model's).")
    ] = None,
    replies: Annotated[
        Path | None,
        typer.Option(
            help='Instead of a model: answer from this script, JSON lines {"content": "..."}, '
            "each request's n choices the next n replies."
        ),
    ] = None,
    name: Annotated[str, typer.Option(help="The model name clients ask for.")] = "judge",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8001,
    max_request_bytes: Annotated[
        int, typer.Option(help="Largest request body accepted (413 above).")
    ] = 1 << 20,
    max_tokens_limit: Annotated[
        int, typer.Option(help="Most tokens one request may ask to generate (422 above).")
    ] = 512,
) -> None:
    """Serve a local causal LM (or a script of replies) on OpenAI's /v1/chat/completions and
    /v1/completions, so judge signals, the Text2Reward loop and any OpenAI client can ask it;
    SIGINT or SIGTERM stops it cleanly."""
    from densereward.adapters.server import run_app
    from densereward.core.errors import ConfigError
    from densereward.judges.chat_server import (
        load_model,
        load_replies,
        make_chat_app,
        make_scripted_chat_app,
    )

    if (model is None) == (replies is None):
        raise ConfigError("model", "give a model folder or --replies FILE, one of the two")
    if replies is not None:
        served = make_scripted_chat_app(
            load_replies(replies), model_name=name, max_request_bytes=max_request_bytes
        )
    else:
        assert model is not None
        loaded, loaded_tokenizer = load_model(model, tokenizer)
        served = make_chat_app(
            loaded,
            loaded_tokenizer,
            model_name=name,
            max_request_bytes=max_request_bytes,
            max_new_tokens_limit=max_tokens_limit,
        )
    run_app(
        served,
        host,
        port,
        "info",
        lambda h, p: console.print(f"judge server: http://{h}:{p}/v1 ({name})"),
    )
    console.print("stopped")


@app.command(name="text2reward")
@user_errors
def text2reward(
    server: Annotated[
        str, typer.Option(help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8001/v1.")
    ],
    recipe: Annotated[
        str,
        typer.Argument(
            help="Run recipe (a control world): its world, trainer, estimator; its first method "
            "is the baseline."
        ),
    ] = "doorkey",
    model: Annotated[str, typer.Option(help="The model name to ask.")] = "judge",
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default runs/text2reward-TIME).")
    ] = None,
    rounds: Annotated[int, typer.Option(help="Rounds of ask, check, train, feed back.")] = 3,
    candidates: Annotated[int, typer.Option(help="Reward programs asked per round.")] = 4,
    steps: Annotated[int | None, typer.Option(help="Override the trainer's length.")] = None,
    seed: Annotated[int, typer.Option(help="Training seed of every run.")] = 0,
    env_weight: Annotated[
        float, typer.Option(help="Weight of the environment's reward beside a candidate's.")
    ] = 1.0,
    temperature: Annotated[float, typer.Option(help="Sampling temperature asked for.")] = 1.0,
    max_tokens: Annotated[int, typer.Option(help="Tokens per reply.")] = 1024,
    timeout: Annotated[float, typer.Option(help="Sandbox seconds per reward call.")] = 30.0,
    api_key_env: Annotated[
        str | None, typer.Option(help="Environment variable holding the server's API key.")
    ] = None,
) -> None:
    """The Text2Reward loop: a model writes reward code for a control task, each program is
    checked (syntax, signature, a sandboxed trial), trained with PPO (the code runs in the
    sandbox), and the training statistics go back to the model for the next round."""
    import os
    import time

    from densereward.runs.text2reward import Text2RewardConfig, connect, run_text2reward

    config = Text2RewardConfig(
        rounds=rounds,
        candidates=candidates,
        env_weight=env_weight,
        temperature=temperature,
        max_tokens=max_tokens,
        timeout=timeout,
        seed=seed,
    )
    run_recipe = RunRecipe.from_yaml(resolve_recipe(recipe))
    run_recipe = _with_steps(run_recipe, steps)
    key = None
    if api_key_env is not None:
        key = os.environ.get(api_key_env)
        if not key:
            raise DenseRewardError(f"--api-key-env: {api_key_env} is not set")
    folder = out or Path("runs") / f"text2reward-{time.strftime('%Y%m%d-%H%M%S')}"
    with connect(server, model, key) as client:
        run_text2reward(
            run_recipe, client, config, folder, say=lambda line: console.print(line, markup=False)
        )
    console.print(f"report: {folder / 'report.md'}")


def _with_steps(recipe: RunRecipe, steps: int | None) -> RunRecipe:
    """``recipe`` with its trainer's length set to ``--steps`` (unchanged without it)."""
    if steps is None:
        return recipe
    if steps <= 0:
        raise DenseRewardError("--steps: must be positive")
    return recipe.with_length(steps)


@app.command(name="recipe")
@user_errors
def show_recipe(
    path: Annotated[str, typer.Argument(help="Recipe YAML, or a built-in name.")],
) -> None:
    """Validate a recipe and print it resolved, every parameter with its value."""
    resolved = resolve_recipe(path)
    text = resolved.read_text(encoding="utf-8") if resolved.exists() else ""
    if "methods:" in text:
        console.print(
            yaml.safe_dump(RunRecipe.from_yaml(resolved).resolved(), sort_keys=False),
            markup=False,
            soft_wrap=True,
        )
        return
    recipe = Recipe.from_yaml(resolved)
    signals, transforms, estimator = recipe.build(str(resolved))
    for name, signal in signals.items():
        console.print(f"signals.{name}: {signal!r}", markup=False)
    for index, transform in enumerate(transforms):
        console.print(f"transforms[{index}]: {transform!r}", markup=False)
    console.print(f"estimator: {estimator!r}", markup=False)


@app.command(name="sandbox")
@user_errors
def sandbox_file(
    file: Annotated[Path, typer.Argument(help="Python file to run in the sandbox.")],
    timeout: Annotated[float, typer.Option(help="Wall-clock seconds before it is killed.")] = 10.0,
    memory: Annotated[int, typer.Option(help="Address space of each process, in MiB.")] = 512,
    function: Annotated[
        str | None, typer.Option(help="Call this function of the file (default: run it).")
    ] = None,
    args: Annotated[
        str | None,
        typer.Option(help="JSON arguments of --function: a list (positional) or an object."),
    ] = None,
    package: Annotated[
        list[str] | None,
        typer.Option(help="An installed package it may import, read-only (repeat: numpy, ...)."),
    ] = None,
) -> None:
    """Run a Python file in the sandbox and print the result as JSON.

    The value is the file's global ``result`` (or what --function returns). Exit 0 when it ran,
    1 when it raised or exited non-zero, 3 when a limit stopped it, 2 for bad arguments."""
    import json

    from densereward.sandbox import Program, Sandbox

    positional: tuple[Any, ...] = ()
    keywords: dict[str, Any] = {}
    if args is not None:
        if function is None:
            raise DenseRewardError("--args: needs --function")
        try:
            parsed = json.loads(args)
        except ValueError as error:
            raise DenseRewardError(f"--args: not JSON: {error}") from None
        if isinstance(parsed, list):
            positional = tuple(parsed)
        elif isinstance(parsed, dict):
            keywords = parsed
        else:
            raise DenseRewardError("--args: must be a JSON list or object")
    sandbox = Sandbox(timeout=timeout, memory_mb=memory, packages=tuple(package or ()))
    result = sandbox.run(Program.from_file(file, function, positional, keywords))
    typer.echo(json.dumps(result.to_json()))
    raise typer.Exit({"ok": 0, "error": 1, "limit": 3}[result.status])


def _mount_world_commands() -> None:
    """The sub-commands worlds contribute (``World.commands``), each with one-line errors."""
    for component in components("world"):
        world: type[World] = component.cls
        for name, command in world.commands.items():
            app.command(name=name)(user_errors(command))


_mount_world_commands()


def main() -> None:
    app(prog_name="densereward")


if __name__ == "__main__":
    main()
