"""Parquet: one row per trajectory; pyarrow list arrays are CSR, so conversion is near zero-copy.

Columns: ``steps.<name>`` (list per step column), per-trajectory columns by name,
``token_spans`` (list of [start, end]), ``parent`` (list), ``text.<name>`` (string),
``step_text.<name>`` (list of strings).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from densereward.core.errors import ValidationError
from densereward.core.trajectories import Trajectories
from densereward.io.atomic import atomic_path

STEPS, TEXT, STEP_TEXT = "steps.", "text.", "step_text."


def _list_array(values: pa.Array, offsets: np.ndarray) -> pa.Array:
    if offsets[-1] < 2**31 - 1:
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)
    return pa.LargeListArray.from_arrays(pa.array(offsets), values)


def _values_array(tensor: torch.Tensor) -> pa.Array:
    array = tensor.detach().cpu().numpy()
    if array.ndim == 1:
        return pa.array(array)
    width = int(np.prod(array.shape[1:]))
    if array.ndim > 2:
        raise ValidationError("column", "columns with more than two dimensions are not supported")
    return pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), width)


def to_table(batch: Trajectories) -> pa.Table:
    offsets = batch.offsets.cpu().numpy()
    columns: dict[str, pa.Array] = {}
    for name, column in batch.steps.items():
        columns[STEPS + name] = _list_array(_values_array(column), offsets)
    for name, column in batch.episodes.items():
        columns[name] = _values_array(column)
    if batch.token_spans is not None:
        columns["token_spans"] = _list_array(_values_array(batch.token_spans), offsets)
    if batch.parent is not None:
        columns["parent"] = _list_array(_values_array(batch.parent), offsets)
    for name, strings in batch.text.items():
        columns[TEXT + name] = pa.array(list(strings), pa.string())
    for name, strings in batch.step_text.items():
        columns[STEP_TEXT + name] = _list_array(pa.array(list(strings), pa.string()), offsets)
    return pa.table(columns)


def write_parquet(batch: Trajectories, path: str | Path) -> None:
    table = to_table(batch)
    with atomic_path(path) as temporary:
        pq.write_table(table, temporary)


def _first_null(column: pa.ChunkedArray) -> int | None:
    if column.null_count == 0:
        return None
    return int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])


def _to_numpy(values: pa.Array, name: str) -> np.ndarray:
    if pa.types.is_fixed_size_list(values.type):
        width = values.type.list_size
        return _to_numpy(pc.list_flatten(values), name).reshape(-1, width)
    if not (
        pa.types.is_integer(values.type)
        or pa.types.is_floating(values.type)
        or pa.types.is_boolean(values.type)
    ):
        raise ValidationError(name, f"expected numbers, got {values.type}")
    if values.null_count:
        raise ValidationError(name, "contains null values")
    return values.to_numpy(zero_copy_only=False)


def from_table(table: pa.Table, source: str = "table") -> Trajectories:
    if table.num_rows == 0:
        raise ValidationError("file", "contains no trajectories", source=source)
    lengths: np.ndarray | None = None
    lengths_from = ""
    steps: dict[str, torch.Tensor] = {}
    episodes: dict[str, torch.Tensor] = {}
    text: dict[str, list[str]] = {}
    step_text: dict[str, list[str]] = {}
    extra: dict[str, torch.Tensor] = {}

    def ragged(name: str, column: pa.ChunkedArray) -> pa.Array:
        nonlocal lengths, lengths_from
        if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
            raise ValidationError(
                name, f"must be a list per trajectory, got {column.type}", source=source
            )
        row = _first_null(column)
        if row is not None:
            raise ValidationError(name, "is null", trajectory=row, source=source)
        column_lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
        if lengths is None:
            lengths, lengths_from = column_lengths, name
        elif not np.array_equal(lengths, column_lengths):
            row = int(np.flatnonzero(lengths != column_lengths)[0])
            raise ValidationError(
                name,
                f"has {column_lengths[row]} steps, {lengths_from} has {lengths[row]}",
                trajectory=row,
                source=source,
            )
        return pc.list_flatten(column.combine_chunks())

    for name in table.column_names:
        column = table.column(name)
        try:
            if name.startswith(STEPS):
                steps[name[len(STEPS) :]] = torch.from_numpy(
                    _to_numpy(ragged(name, column), name).copy()
                )
            elif name.startswith(STEP_TEXT):
                step_text[name[len(STEP_TEXT) :]] = ragged(name, column).to_pylist()
            elif name.startswith(TEXT):
                text[name[len(TEXT) :]] = column.to_pylist()
            elif name in ("token_spans", "parent"):
                extra[name] = torch.from_numpy(
                    _to_numpy(ragged(name, column), name).astype(np.int64)
                )
            else:
                row = _first_null(column)
                if row is not None:
                    raise ValidationError(name, "is null", trajectory=row)
                episodes[name] = torch.from_numpy(_to_numpy(column.combine_chunks(), name).copy())
        except ValidationError as error:
            raise ValidationError(
                error.field,
                error.problem,
                trajectory=error.trajectory,
                step=error.step,
                source=source,
            ) from None
    if lengths is None:
        raise ValidationError("steps", "no step columns (named 'steps.<name>')", source=source)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    torch.cumsum(torch.from_numpy(lengths.astype(np.int64)), 0, out=offsets[1:])
    try:
        return Trajectories(
            offsets, steps, episodes, extra.get("token_spans"), extra.get("parent"), text, step_text
        )
    except ValidationError as error:
        raise ValidationError(
            error.field, error.problem, trajectory=error.trajectory, step=error.step, source=source
        ) from None


def read_parquet(path: str | Path) -> Trajectories:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        message = str(error).splitlines()[0][:120]
        raise ValidationError(
            "file", f"is not a readable Parquet file ({message})", source=str(path)
        ) from None
    return from_table(table, str(path))
