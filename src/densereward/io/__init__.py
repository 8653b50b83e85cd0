"""Reading and writing ``Trajectories``: JSONL, Parquet, and TRL's stepwise-supervision format.

Readers validate everything and report the file and line (or row); writers are atomic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from densereward.core.errors import ValidationError
from densereward.core.trajectories import Trajectories
from densereward.io.jsonl import iter_json_lines, read_jsonl, write_jsonl
from densereward.io.parquet import read_parquet, write_parquet
from densereward.io.trl import is_trl_record, read_trl, write_trl

Format = Literal["auto", "jsonl", "parquet", "trl"]

__all__ = ["Format", "read_trajectories", "write_trajectories"]


def detect_format(path: Path) -> Literal["jsonl", "parquet", "trl"]:
    """By extension, then content: a JSONL file whose first row has ``completions`` is TRL."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
        except Exception:
            return "parquet"  # let the reader produce the error
        return "trl" if "completions" in names and "labels" in names else "parquet"
    for _, record in iter_json_lines(path):
        return "trl" if is_trl_record(record) else "jsonl"
    return "jsonl"


def read_trajectories(path: str | Path, format: Format = "auto") -> Trajectories:
    path = Path(path)
    if not path.exists():
        raise ValidationError("path", "file not found", source=str(path))
    if path.is_dir():
        raise ValidationError("path", "is a directory, expected a file", source=str(path))
    kind = detect_format(path) if format == "auto" else format
    if kind == "parquet":
        return read_parquet(path)
    if kind == "trl":
        return read_trl(path)
    return read_jsonl(path)


def write_trajectories(batch: Trajectories, path: str | Path, format: Format = "auto") -> None:
    path = Path(path)
    kind = format
    if kind == "auto":
        kind = "parquet" if path.suffix == ".parquet" else "jsonl"
    if kind == "trl":
        write_trl(batch, path)
    elif kind == "parquet":
        write_parquet(batch, path)
    else:
        write_jsonl(batch, path)
