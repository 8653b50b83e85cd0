"""Preference data as users have it, checked record by record: TRL's ``chosen``/``rejected``
pairs (with or without a shared ``prompt``; strings or conversations), ranked lists, ordinal
grades; JSON, JSON lines or Parquet. Every problem is one ``ValidationError`` naming the file,
the line (the row, for Parquet) and the field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, model_validator

from densereward.core.errors import ValidationError
from densereward.evaluation.records import Record, RecordsFile, StrictRecord, read_records


class Message(StrictRecord):
    role: str
    content: str


Text = str | list[Message]
"""a string, or a conversation (TRL's conversational format)"""


class PairRecord(StrictRecord):
    prompt: Text | None = None
    chosen: Text
    rejected: Text
    tie: bool = False

    @model_validator(mode="after")
    def different(self) -> PairRecord:
        if self.chosen == self.rejected and not self.tie:
            raise ValueError("chosen equals rejected (mark the pair tie: true, or drop it)")
        return self


class RankedRecord(StrictRecord):
    prompt: Text | None = None
    responses: Annotated[list[Text], Field(min_length=2)]
    """best first"""


class GradedRecord(StrictRecord):
    prompt: Text | None = None
    response: Text
    grade: Annotated[int, Field(ge=0)]


FORMATS: dict[str, type[StrictRecord]] = {
    "pairs": PairRecord,
    "ranked": RankedRecord,
    "graded": GradedRecord,
}


@dataclass(frozen=True)
class PreferenceData:
    """Checked records as texts: ``lists[i]`` best first (two for a pair, one for a grade)."""

    lists: list[list[str]]
    tie: list[bool] | None
    grades: list[int] | None


def read_rows(path: str | Path) -> RecordsFile:
    """JSON / JSON lines through :func:`read_records`; Parquet row by row (row ``n`` is reported
    as line ``n``)."""
    path = Path(path)
    if path.suffix.lower() != ".parquet":
        return read_records(path)
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise ValidationError("file", f"not a Parquet file: {error}", source=str(path)) from None
    return RecordsFile(str(path), [Record(row, n) for n, row in enumerate(table.to_pylist(), 1)])


def read_preferences(
    path: str | Path,
    format: str,
    render: Callable[[Any, Any], str],
    ties: bool,
    levels: int | None = None,
) -> PreferenceData:
    """The records of ``path`` in ``format`` (``pairs``, ``ranked``, ``graded``), each text
    ``render(prompt, response)``. ``ties``: whether the loss has ties (a tied pair is refused
    otherwise); ``levels``: the number of grades (a grade at or above it is refused)."""
    if format not in FORMATS:
        raise ValidationError("format", f"unknown format {format!r}")
    rows = read_rows(path)
    if not rows.records:
        raise ValidationError("file", "has no records", source=rows.source)
    records = rows.validate(FORMATS[format])
    lists: list[list[str]] = []
    tie: list[bool] = []
    grades: list[int] = []
    for row, record in zip(rows.records, records, strict=True):
        try:
            texts = _texts(record, render)
        except ValueError as error:
            raise rows.error(row, str(error), ("prompt",)) from None
        if isinstance(record, PairRecord):
            if record.tie and not ties:
                raise rows.error(
                    row, "is a tie, but this loss has none (use --loss bt_ties)", ("tie",)
                )
            if texts[0] == texts[1] and not record.tie:
                raise rows.error(row, "chosen equals rejected once rendered", ("rejected",))
            tie.append(record.tie)
        elif isinstance(record, GradedRecord):
            if levels is not None and record.grade >= levels:
                raise rows.error(
                    row, f"grade {record.grade} is out of range 0..{levels - 1}", ("grade",)
                )
            grades.append(record.grade)
        lists.append(texts)
    return PreferenceData(
        lists, tie if format == "pairs" else None, grades if format == "graded" else None
    )


def _texts(record: StrictRecord, render: Callable[[Any, Any], str]) -> list[str]:
    if isinstance(record, PairRecord):
        return [render(record.prompt, record.chosen), render(record.prompt, record.rejected)]
    if isinstance(record, RankedRecord):
        return [render(record.prompt, r) for r in record.responses]
    assert isinstance(record, GradedRecord)
    return [render(record.prompt, record.response)]


def plain_render(tokenizer: Any) -> Callable[[Any, Any], str]:
    """``prompt + response`` as TRL's reward step sees them: strings concatenated; conversations
    through the tokenizer's chat template (or ``role: content`` lines without one)."""

    def messages(value: Any) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in value]

    def render(prompt: Any, response: Any) -> str:
        if isinstance(response, str) and (prompt is None or isinstance(prompt, str)):
            return (prompt or "") + response
        if isinstance(response, str) or isinstance(prompt, str):
            raise ValueError("prompt and responses must be all strings or all conversations")
        turns = (messages(prompt) if prompt else []) + messages(response)
        if getattr(tokenizer, "chat_template", None):
            return str(tokenizer.apply_chat_template(turns, tokenize=False))
        return "".join(f"{t['role']}: {t['content']}\n" for t in turns)

    return render
