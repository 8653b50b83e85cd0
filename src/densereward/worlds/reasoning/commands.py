"""The reasoning world's sub-commands (it contributes them through ``World.commands``):
``densereward tasks``, its exporters, and ``densereward label``, its resumable labeling job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from densereward.core.errors import ConfigError
from densereward.io.jsonl import write_records


def export_tasks(
    format: Annotated[
        str,
        typer.Argument(
            help="stepwise (TRL stepwise supervision), processbench (exact earliest-error "
            "labels) or preference (chosen/rejected pairs)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (.jsonl).")],
    problems: Annotated[int, typer.Option(help="Problems to draw, one record each.")] = 1000,
    families: Annotated[
        str, typer.Option(help="Comma-separated task families: arithmetic, equation, lists.")
    ] = "arithmetic",
    min_ops: Annotated[int, typer.Option(help="Fewest operations (steps) per problem.")] = 2,
    max_ops: Annotated[int, typer.Option(help="Most operations (steps) per problem.")] = 4,
    max_operand: Annotated[int, typer.Option(help="Largest operand.")] = 9,
    error_fraction: Annotated[
        float, typer.Option(help="Share of solutions with one controlled mistake.")
    ] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed of problems and mistakes.")] = 0,
) -> None:
    """Write reasoning-world problems as a dataset, every label from the exact verifier.

    Other tools train or evaluate on it: TRL stepwise supervision, ProcessBench, preference pairs.
    """
    from densereward.worlds.reasoning.export import EXPORT_FORMATS, export_records
    from densereward.worlds.reasoning.tasks import Difficulty, TaskSpec, sample_problems

    if format not in EXPORT_FORMATS:
        raise ConfigError("format", f"unknown {format!r}; known: {', '.join(EXPORT_FORMATS)}")
    if out.suffix != ".jsonl":
        raise ConfigError("--out", f"{out}: tasks are written as JSON lines; name it *.jsonl")
    if problems < 1:
        raise ConfigError("--problems", f"must be at least 1, got {problems}")
    if not 0.0 <= error_fraction <= 1.0:
        raise ConfigError("--error-fraction", f"must be in [0, 1], got {error_fraction}")
    try:
        difficulty = Difficulty(min_ops, max_ops, max_operand)
        spec = TaskSpec(tuple(f.strip() for f in families.split(",")), difficulty)
    except KeyError as error:
        raise ConfigError("--families", str(error.args[0])) from None
    except ValueError as error:
        raise ConfigError("--min-ops/--max-ops/--max-operand", str(error)) from None
    records = export_records(
        format, sample_problems(spec, problems, seed), seed=seed, error_fraction=error_fraction
    )
    write_records(records, out)
    Console().print(f"wrote {len(records)} {format} records to {escape(str(out))}")


def label_rollout_steps(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Job folder (shards/part-*.parquet, manifest.json). Rerun the same command "
            "with it to resume an interrupted job.",
        ),
    ],
    rollouts: Annotated[
        Path | None,
        typer.Argument(help="Rollouts file (.jsonl): one {id, problem, response} object per line."),
    ] = None,
    prover: Annotated[
        Path | None,
        typer.Option(
            help="The prover policy: a model file of this world (--example writes one) or a "
            "run folder's checkpoints/<method>-seed<k>.pt."
        ),
    ] = None,
    prm: Annotated[
        Path | None, typer.Option(help="A PRM model file: also score every step with it.")
    ] = None,
    example: Annotated[
        bool,
        typer.Option(
            "--example",
            help="Label a small example: make a tiny SFT prover, a PRM and 64 rollouts in "
            "OUT/example/ (kept for reruns), then label them.",
        ),
    ] = False,
    rollouts_per_step: Annotated[
        int, typer.Option(help="Monte-Carlo completions of every step prefix.")
    ] = 8,
    shard_size: Annotated[
        int, typer.Option(help="Rollouts per shard: the unit of work and of resumption.")
    ] = 8,
    seed: Annotated[
        int, typer.Option(help="Job seed; shard k samples with a seed of (seed, k).")
    ] = 0,
    local: Annotated[
        bool, typer.Option("--local", help="Label in this process instead of on Ray.")
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(help="A Ray cluster to run on (default: a private local instance)."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Ray actors (default: one per CPU of the cluster).")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Label every step of a file of rollouts: Monte-Carlo soft and hard labels, PRM scores.

    Sharded Parquet, shards committed atomically; rerun the same command to resume after a kill.
    """
    from densereward.labeling.jobs import JobInterrupted, check_sizes, run_label_job
    from densereward.worlds.reasoning.label_job import (
        check_rollouts_per_step,
        label_job,
        write_example,
    )

    console = Console()
    if local and (ray_address is not None or workers is not None):
        raise ConfigError("--local", "labels in this process: give no --ray-address or --workers")
    # every option checked before the example is built (seconds of SFT, files in OUT)
    check_rollouts_per_step(rollouts_per_step)
    check_sizes(shard_size, workers)
    if example:
        if rollouts is not None or prover is not None or prm is not None:
            raise ConfigError("--example", "makes its own rollouts, prover and PRM; give none")
        inputs, seconds = write_example(out / "example")
        if seconds:
            console.print(f"made the example's prover, PRM and rollouts in {seconds:.1f} s")
        rollouts, prover, prm = inputs.rollouts, inputs.prover, inputs.prm
    if rollouts is None:
        raise ConfigError("ROLLOUTS", "give a rollouts file (or --example)")
    if prover is None:
        raise ConfigError("--prover", "give the prover policy's model file (or --example)")
    job = label_job(rollouts, prover, prm, rollouts_per_step, shard_size, seed)
    try:
        summary = run_label_job(
            job, out, local=local, ray_address=ray_address, workers=workers, progress=progress
        )
    except JobInterrupted as interrupted:
        Console(stderr=True, highlight=False).print(str(interrupted), markup=False)
        raise typer.Exit(130) from None
    resumed = (
        f" (resumed: {summary.adopted} shard file(s) adopted, {summary.repaired} repaired)"
        if summary.adopted or summary.repaired
        else ""
    )
    console.print(
        f"labelled {summary.labels} steps of {job.rows} rollouts in {summary.shards} shards; "
        f"this run computed {summary.computed} shard(s), {summary.generated_tokens} tokens "
        f"generated, in {summary.seconds:.1f} s{resumed}"
    )
    console.print(
        f"read them with densereward.labeling.jobs.read_labels({str(out)!r}) "
        f"or pyarrow.dataset.dataset({str(out / 'shards')!r})",
        markup=False,
    )
