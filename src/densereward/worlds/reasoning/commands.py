"""``densereward tasks``: the reasoning world's exporters on the command line (the world
contributes the command through ``World.commands``)."""

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
