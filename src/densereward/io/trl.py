"""TRL's stepwise-supervision format: rows of ``prompt``, ``completions`` (steps), ``labels``.

It is what ``trl.PRMTrainer`` trains on. A row becomes a trajectory whose steps are the
completions: the labels become the step column ``label`` (1.0 / 0.0), the strings ride along as
``text["prompt"]`` and ``step_text["completion"]``. Writing adds any other step column (say, a
shaped ``reward``) as an extra list column, which TRL ignores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from densereward.core.errors import ValidationError
from densereward.core.trajectories import Trajectories
from densereward.io.atomic import atomic_path
from densereward.io.jsonl import iter_json_lines

TRL_KEYS = ("prompt", "completions", "labels")


def is_trl_record(record: dict[str, Any]) -> bool:
    return "completions" in record and "labels" in record and "steps" not in record


def trl_from_records(records: list[tuple[int, dict[str, Any]]], source: str) -> Trajectories:
    prompts: list[str] = []
    completions: list[list[str]] = []
    labels: list[list[float]] = []
    extras: dict[str, list[list[float]]] = {}
    for number, record in records:

        def fail(field: str, problem: str, n: int = number) -> ValidationError:
            return ValidationError(field, problem, line=n, source=source)

        prompt, steps, marks = record.get("prompt"), record.get("completions"), record.get("labels")
        if not isinstance(prompt, str):
            raise fail("prompt", "must be a string")
        if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
            raise fail("completions", "must be a list of strings")
        if not isinstance(marks, list) or not all(isinstance(m, bool) for m in marks):
            raise fail("labels", "must be a list of true/false")
        if len(marks) != len(steps):
            raise fail("labels", f"has {len(marks)} labels for {len(steps)} completions")
        if not steps:
            raise fail("completions", "is empty")
        for key, value in record.items():
            if key in TRL_KEYS:
                continue
            if not isinstance(value, list) or len(value) != len(steps):
                raise fail(key, "extra columns must be lists with one number per completion")
            extras.setdefault(key, []).append(value)
        prompts.append(prompt)
        completions.append(steps)
        labels.append([float(m) for m in marks])
    if not prompts:
        raise ValidationError("file", "contains no rows", source=source)
    step_columns: dict[str, list[Any]] = {"label": labels, **extras}
    try:
        return Trajectories.from_episodes(
            {
                k: [torch.tensor(v, dtype=torch.float64) for v in vs]
                for k, vs in step_columns.items()
            },
            text={"prompt": prompts},
            step_text={"completion": completions},
        )
    except (ValidationError, TypeError, ValueError) as error:
        raise ValidationError("labels", str(error), source=source) from None


def read_trl(path: str | Path) -> Trajectories:
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        records = list(enumerate(table.to_pylist(), start=1))
    else:
        records = list(iter_json_lines(path))
    return trl_from_records(records, str(path))


def trl_records(batch: Trajectories) -> list[dict[str, Any]]:
    if "completion" not in batch.step_text or "prompt" not in batch.text:
        raise ValidationError(
            "step_text.completion", "TRL output needs prompts and completion strings"
        )
    label = batch.step("label")
    bounds = batch.offsets.tolist()
    labels = (label >= 0.5).tolist()
    columns = {k: v.tolist() for k, v in batch.steps.items() if k != "label"}
    out = []
    for i in range(len(batch)):
        start, end = bounds[i], bounds[i + 1]
        record: dict[str, Any] = {
            "prompt": batch.text["prompt"][i],
            "completions": list(batch.step_text["completion"][start:end]),
            "labels": labels[start:end],
        }
        record.update({k: v[start:end] for k, v in columns.items()})
        out.append(record)
    return out


def write_trl(batch: Trajectories, path: str | Path) -> None:
    records = trl_records(batch)
    path = Path(path)
    with atomic_path(path) as temporary:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(records), temporary)
        else:
            with temporary.open("w", encoding="utf-8") as handle:
                for record in records:
                    handle.write(json.dumps(record, allow_nan=False, ensure_ascii=False) + "\n")
