"""Records files read by the evaluators, validated once at the edge.

A records file is a JSON array of objects (the ProcessBench and RewardMATH releases) or JSON
lines (one object per line). :func:`read_records` parses it into :class:`Record` values that
remember where they came from; :meth:`RecordsFile.validate` checks each against a pydantic model
(a :class:`StrictRecord`) and turns the first ``pydantic.ValidationError`` into the project's
one-line :class:`~densereward.core.errors.ValidationError`, naming the file, the line and the
field path from the top of the file::

    scores.jsonl:3: field 'score[2]': should be a finite number, got NaN
    gsm8k.json:57: field '[12].label': 7 is past the last of 5 steps

Guards that apply to every file: at most :data:`MAX_FILE_BYTES`, UTF-8, not empty, the top level
a list (or lines of objects), no key twice in one object (``json`` would keep the last one
silently), and nesting too deep for Python's parser reported as an error rather than a
``RecursionError`` (:func:`located` does the same for readers that are not ours).
"""

from __future__ import annotations

import json
import re
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import pydantic
from pydantic import ConfigDict, PlainValidator, ValidationInfo

from densereward.core.errors import ValidationError
from densereward.io.jsonl import TOO_DEEP

MAX_FILE_BYTES = 1 << 30
"""Largest records file read (1 GiB). Evaluator inputs are score files of megabytes; as Python
objects a larger one would take tens of GiB before the first record could be checked."""

Model = TypeVar("Model", bound=pydantic.BaseModel)


class StrictRecord(pydantic.BaseModel):
    """Base of the evaluators' record models: strict types (``true`` is not ``1``, ``"1"`` is not
    a number, ``1.5`` is not an index), no NaN or infinity, fields not in the model ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False, frozen=True)


def _identifier(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"must be a string or an integer, got {show(value)}")
    return str(value)


Identifier = Annotated[str, PlainValidator(_identifier)]
"""An id: a JSON string or integer (not a boolean), compared as text, so ``3`` and ``"3"`` are the
same id."""


def show(value: object, width: int = 40) -> str:
    """``value`` as JSON spells it (``true``, ``NaN``, ``"x"``), cut to ``width`` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def check_unique(value: Hashable, info: ValidationInfo, what: str | None = None) -> None:
    """Reject ``value`` if an earlier record of the same file had it (for a field validator).

    The memory lives in the validation context that :meth:`RecordsFile.validate` passes to every
    record; a model validated on its own (no context) skips the check.
    """
    if info.context is None:
        return
    seen = info.context.setdefault(("unique", info.field_name), {})
    if value in seen:
        raise ValueError(f"{what or show(value)} repeats {seen[value]}")
    seen[value] = info.context["where"]


@dataclass(frozen=True)
class Record:
    """One top-level value of a records file and where it starts."""

    value: Any
    line: int
    """1-based line of the file where the value starts."""
    index: int | None = None
    """Position in the JSON array; ``None`` for JSON lines."""

    @property
    def where(self) -> str:
        return (
            f"line {self.line}" if self.index is None else f"item {self.index} (line {self.line})"
        )

    def field(self, location: tuple[int | str, ...] = ()) -> str:
        """The field path from the top of the file: ``steps[3]``, or ``[12].steps[3]`` for the
        13th item of a JSON array."""
        parts = [] if self.index is None else [self.index]
        text = ""
        for part in [*parts, *location]:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
        return text or "line"


@dataclass(frozen=True)
class RecordsFile:
    """The records of one file, each with its position, and ``source``, the file's name."""

    source: str
    records: list[Record]

    def __len__(self) -> int:
        return len(self.records)

    def error(
        self, record: Record, problem: str, location: tuple[int | str, ...] = ()
    ) -> ValidationError:
        """Our one-line error for ``record`` at the field ``location`` inside it."""
        return ValidationError(
            record.field(location), problem, line=record.line, source=self.source
        )

    def validate(self, model: type[Model], context: dict[Any, Any] | None = None) -> list[Model]:
        """Every record as ``model`` (strict); the first failure raises our ``ValidationError``.

        ``context`` (one dict for the whole file) is what field validators see as
        ``info.context``: :func:`check_unique` keeps the values seen there.
        """
        context = {} if context is None else context
        out = []
        for record in self.records:
            if not isinstance(record.value, dict):
                raise self.error(record, f"expected a JSON object, got {_json_kind(record.value)}")
            context["where"] = record.where
            try:
                out.append(model.model_validate(record.value, strict=True, context=context))
            except pydantic.ValidationError as error:
                detail = error.errors(include_url=False)[0]
                raise self.error(record, _problem(detail), tuple(detail["loc"])) from None
        return out


def _problem(detail: Any) -> str:
    """A pydantic error detail as our problem text: 'should be a valid integer, got true'."""
    kind = detail["type"]
    if kind == "missing":
        return "is missing"
    if kind in ("value_error", "assertion_error"):
        return str(detail["ctx"]["error"])
    message = re.sub(r"^(Input|List|Value) should", "should", detail["msg"])
    message = re.sub(r"a valid dictionary( or instance of \w+)?", "a JSON object", message)
    message = message.replace(" after validation", "")
    if kind in ("too_short", "too_long"):
        return message
    return f"{message}, got {show(detail['input'])}"


def _json_kind(value: object) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object that refuses a key given twice (``json`` would silently keep the last)."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


_DECODER = json.JSONDecoder(object_pairs_hook=_object)
_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _skip(text: str, position: int) -> int:
    match = _WHITESPACE.match(text, position)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def read_records(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> RecordsFile:
    """Parse a JSON array of records, or JSON lines, into records that know their line.

    Raises our ``ValidationError`` (one line, naming the file and where possible the line) for a
    missing, oversized, non-UTF-8 or empty file, malformed JSON, a top level that is neither an
    array nor lines of objects, a key twice in one object, or nesting too deep to parse.
    """
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise ValidationError("path", "file not found", source=source)
    if path.is_dir():
        raise ValidationError("path", "is a directory, expected a file", source=source)
    size = path.stat().st_size
    if size > max_bytes:
        raise ValidationError(
            "file", f"is {size:,} bytes, over the limit of {max_bytes:,}", source=source
        )
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError("file", "is not UTF-8 text (binary file?)", source=source) from None
    start = _skip(text, 0)
    if start == len(text):
        raise ValidationError("file", "is empty, expected records", source=source)
    if text[start] == "[":
        records = _json_array(text, start, source)
    else:
        records = _json_lines(text, path)
    if not records:
        raise ValidationError("file", "holds no records", source=source)
    return RecordsFile(source, records)


def _json_array(text: str, start: int, source: str) -> list[Record]:
    """Items of the top-level array one ``raw_decode`` at a time, so each knows its line."""
    records: list[Record] = []
    position = _skip(text, start + 1)
    line, counted = 1, 0
    if text.startswith("]", position):
        position += 1
    else:
        while True:
            line += text.count("\n", counted, position)
            counted = position
            record = Record(None, line, len(records))
            try:
                value, end = _DECODER.raw_decode(text, position)
            except json.JSONDecodeError as error:
                raise ValidationError(
                    "file",
                    f"malformed JSON ({error.msg} at column {error.colno})",
                    line=error.lineno,
                    source=source,
                ) from None
            except RecursionError:
                raise ValidationError(record.field(), TOO_DEEP, line=line, source=source) from None
            except _DuplicateKey as duplicate:
                raise ValidationError(
                    record.field(),
                    f"key {show(duplicate.key)} appears twice in one object",
                    line=line,
                    source=source,
                ) from None
            records.append(Record(value, line, len(records)))
            position = _skip(text, end)
            if text.startswith(",", position):
                position = _skip(text, position + 1)
            elif text.startswith("]", position):
                position += 1
                break
            else:
                raise ValidationError(
                    "file",
                    "malformed JSON (expected ',' or ']' after an item)",
                    line=line + text.count("\n", counted, position),
                    source=source,
                )
    rest = _skip(text, position)
    if rest != len(text):
        raise ValidationError(
            "file",
            "malformed JSON (extra data after the top-level array)",
            line=1 + text.count("\n", 0, rest),
            source=source,
        )
    return records


def _json_lines(text: str, path: Path) -> list[Record]:
    source = str(path)
    _reject_single_value(text, path)
    records = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(Record(_DECODER.decode(line), number))
        except json.JSONDecodeError as error:
            raise ValidationError(
                "line",
                f"malformed JSON ({error.msg} at column {error.colno})",
                line=number,
                source=source,
            ) from None
        except RecursionError:
            raise ValidationError("line", TOO_DEEP, line=number, source=source) from None
        except _DuplicateKey as duplicate:
            raise ValidationError(
                "line",
                f"key {show(duplicate.key)} appears twice in one object",
                line=number,
                source=source,
            ) from None
    return records


def _reject_single_value(text: str, path: Path) -> None:
    """A file that is one JSON value other than an array is not a records file; one object in a
    ``.jsonl`` file is a file of one line, though."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return  # several lines of JSON, or a malformed one that the line reader will name
    if isinstance(value, dict) and path.suffix != ".json" and text.strip().count("\n") == 0:
        return
    raise ValidationError(
        "file",
        f"the top level is {_json_kind(value) if not isinstance(value, dict) else 'an object'}; "
        "expected an array of records or one JSON object per line",
        source=str(path),
    )


def _deepest_line(path: Path) -> int | None:
    """The first line that is too deeply nested to parse (looked for only after a failure)."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                json.loads(raw)
            except RecursionError:
                return number
            except ValueError:
                continue
    return None


@contextmanager
def located(path: str | Path) -> Iterator[None]:
    """Name ``path`` in the errors of code that reads it: our ``ValidationError`` without a
    source gets one, and a ``RecursionError`` (a JSON line nested too deeply for ``json``)
    becomes a one-line ``ValidationError`` at that line.

    >>> from densereward.core.errors import ValidationError
    >>> try:
    ...     with located("rollouts.jsonl"):
    ...         raise ValidationError("steps.obs", "no such step column")
    ... except ValidationError as error:
    ...     print(error)
    rollouts.jsonl: field 'steps.obs': no such step column
    """
    path = Path(path)
    try:
        yield
    except ValidationError as error:
        if error.source is not None:
            raise
        raise error.at_line(error.line, str(path)) from None
    except RecursionError:
        line = _deepest_line(path) if path.is_file() else None
        raise ValidationError("line", TOO_DEEP, line=line, source=str(path)) from None
