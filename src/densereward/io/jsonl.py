"""JSON Lines: one trajectory per line.

Each line is an object::

    {"steps": {"reward": [0.0, 1.0], "prm": [0.9, 0.7]},   # per-step columns (numbers or lists)
     "outcome": 1.0, "group": 3, "terminated": true,      # per-trajectory columns
     "token_spans": [[0, 5], [5, 12]], "parent": [-1, 0], # optional: tokens per step, tree
     "text": {"prompt": "..."}, "step_text": {"step": ["...", "..."]}}

Every line must have the same columns. Blank lines are skipped; errors name the line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densereward.core.errors import ValidationError
from densereward.core.trajectories import Trajectories, as_tensor
from densereward.io.atomic import atomic_path

RESERVED = ("steps", "token_spans", "parent", "text", "step_text")
# JSON does not tell 1 from 1.0: numbers are read as float64 except in these integer columns.
INTEGER_COLUMNS = ("group", "token_spans", "parent", "steps.env", "steps.time", "steps.position")


def _numeric(tensor: torch.Tensor, name: str) -> torch.Tensor:
    if tensor.dtype in (torch.int64, torch.int32) and name not in INTEGER_COLUMNS:
        return tensor.to(torch.float64)
    return tensor


TOO_DEEP = (
    f"JSON nested deeper than Python's parser allows (about {sys.getrecursionlimit()} levels)"
)


def iter_json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line; malformed lines raise with their number."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ValidationError(
                    "line", "is not UTF-8 text (binary file?)", line=number, source=str(path)
                ) from None
            if not text.strip():
                continue
            try:
                # NaN/Infinity parse as floats here and are then rejected by validation, which
                # names the field, trajectory and line.
                record = json.loads(text)
            except json.JSONDecodeError as error:
                raise ValidationError(
                    "line",
                    f"malformed JSON ({error.msg} at column {error.colno})",
                    line=number,
                    source=str(path),
                ) from None
            except RecursionError:
                raise ValidationError("line", TOO_DEEP, line=number, source=str(path)) from None
            if not isinstance(record, dict):
                raise ValidationError(
                    "line",
                    f"expected a JSON object, got {type(record).__name__}",
                    line=number,
                    source=str(path),
                )
            yield number, record


def read_jsonl(path: str | Path) -> Trajectories:
    path = Path(path)
    source = str(path)
    lines: list[int] = []
    step_columns: dict[str, list[Any]] = {}
    episode_columns: dict[str, list[Any]] = {}
    spans: list[Any] = []
    parents: list[Any] = []
    text: dict[str, list[str]] = {}
    step_text: dict[str, list[list[str]]] = {}
    first_keys: tuple[set[str], set[str]] | None = None
    for number, record in iter_json_lines(path):

        def fail(field: str, problem: str, n: int = number) -> ValidationError:
            return ValidationError(field, problem, line=n, source=source)

        steps = record.get("steps")
        if not isinstance(steps, dict) or not steps:
            raise fail("steps", "missing, or not an object of per-step columns")
        keys = (set(steps), {k for k in record if k not in RESERVED})
        if first_keys is None:
            first_keys = keys
        elif keys != first_keys:
            step_diff = sorted(first_keys[0] ^ keys[0])
            field = f"steps.{step_diff[0]}" if step_diff else sorted(first_keys[1] ^ keys[1])[0]
            raise fail(field, f"present on line {lines[0]} but not here, or the reverse")
        length = None
        for name, values in steps.items():
            if not isinstance(values, list):
                raise fail(f"steps.{name}", "must be a list with one entry per step")
            if length is None:
                length = len(values)
            elif len(values) != length:
                raise fail(f"steps.{name}", f"has {len(values)} steps, other columns have {length}")
            step_columns.setdefault(name, []).append(values)
        for name in keys[1]:
            episode_columns.setdefault(name, []).append(record[name])
        for name, store in (("token_spans", spans), ("parent", parents)):
            if name in record:
                if len(lines) != len(store):
                    raise fail(name, "present on this line but missing on earlier ones")
                store.append(record[name])
        for name, value in (record.get("text") or {}).items():
            text.setdefault(name, []).append(value)
        for name, value in (record.get("step_text") or {}).items():
            step_text.setdefault(name, []).append(value)
        lines.append(number)
    if not lines:
        raise ValidationError("file", "contains no trajectories", source=source)
    for name, store in (("token_spans", spans), ("parent", parents)):
        if store and len(store) != len(lines):
            raise ValidationError(
                name, "present on some lines only", line=lines[len(store)], source=source
            )

    try:
        steps_flat = {
            name: _ragged_tensor(values, f"steps.{name}") for name, values in step_columns.items()
        }
        lengths = torch.tensor(
            [len(v) for v in next(iter(step_columns.values()))], dtype=torch.int64
        )
        offsets = torch.zeros(len(lines) + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=offsets[1:])
        episodes = {name: _tensor(values, name) for name, values in episode_columns.items()}
        batch = Trajectories(
            offsets,
            steps_flat,
            episodes,
            _ragged_tensor(spans, "token_spans") if spans else None,
            _ragged_tensor(parents, "parent") if parents else None,
            text,
            {k: [s for episode in v for s in episode] for k, v in step_text.items()},
        )
    except ValidationError as error:
        line = lines[error.trajectory] if error.trajectory is not None else None
        raise error.at_line(line, source) from None
    return batch


def _tensor(values: list[Any], name: str) -> torch.Tensor:
    for index, value in enumerate(values):
        if not _is_numeric(value):
            raise ValidationError(
                name, f"expected a number, got {json.dumps(value)[:30]}", trajectory=index
            )
    try:
        return _numeric(as_tensor(np.asarray(values), name), name)
    except ValueError:
        raise ValidationError(name, "must have the same shape on every line") from None


def _ragged_tensor(per_trajectory: list[list[Any]], name: str) -> torch.Tensor:
    for index, episode in enumerate(per_trajectory):
        if not isinstance(episode, list):
            raise ValidationError(name, "must be a list with one entry per step", trajectory=index)
        for step, value in enumerate(episode):
            if not _is_numeric(value):
                raise ValidationError(
                    name,
                    f"expected a number, got {json.dumps(value)[:30]}",
                    trajectory=index,
                    step=step,
                )
    flat = [value for episode in per_trajectory for value in episode]
    try:
        return (
            _numeric(as_tensor(np.asarray(flat), name), name)
            if flat
            else torch.zeros(0, dtype=torch.float64)
        )
    except ValueError:
        raise ValidationError(name, "entries must all have the same shape") from None


def _is_numeric(value: Any) -> bool:
    if isinstance(value, bool | int | float):
        return True
    return isinstance(value, list) and all(_is_numeric(v) for v in value)


def trajectory_records(batch: Trajectories) -> Iterable[dict[str, Any]]:
    """One JSON-ready dict per trajectory (the inverse of :func:`read_jsonl`)."""
    bounds = batch.offsets.tolist()
    steps = {name: column.cpu().tolist() for name, column in batch.steps.items()}
    episodes = {name: column.cpu().tolist() for name, column in batch.episodes.items()}
    spans = batch.token_spans.cpu().tolist() if batch.token_spans is not None else None
    parent = batch.parent.cpu().tolist() if batch.parent is not None else None
    for i in range(len(batch)):
        start, end = bounds[i], bounds[i + 1]
        record: dict[str, Any] = {
            "steps": {name: column[start:end] for name, column in steps.items()}
        }
        record.update({name: column[i] for name, column in episodes.items()})
        if spans is not None:
            record["token_spans"] = spans[start:end]
        if parent is not None:
            record["parent"] = parent[start:end]
        if batch.text:
            record["text"] = {name: values[i] for name, values in batch.text.items()}
        if batch.step_text:
            record["step_text"] = {
                name: list(values[start:end]) for name, values in batch.step_text.items()
            }
        yield record


def write_records(records: Iterable[dict[str, Any]], path: str | Path) -> None:
    """Write JSON objects one per line, atomically (all or nothing)."""
    with atomic_path(path) as temporary, temporary.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, allow_nan=False, ensure_ascii=False))
            handle.write("\n")


def write_jsonl(batch: Trajectories, path: str | Path) -> None:
    write_records(trajectory_records(batch), path)
