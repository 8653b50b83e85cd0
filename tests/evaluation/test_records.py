"""The evaluators' records layer: parsing with positions, guards, and pydantic errors as ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import Field, StrictInt, ValidationInfo, field_validator

from densereward.core.errors import ValidationError
from densereward.evaluation.records import (
    Identifier,
    Record,
    StrictRecord,
    check_unique,
    located,
    read_records,
)

DEEP = "[" * 100_000 + "]" * 100_000


class Item(StrictRecord):
    id: Identifier
    count: StrictInt = Field(ge=0)

    @field_validator("id")
    @classmethod
    def _unique(cls, value: str, info: ValidationInfo) -> str:
        check_unique(value, info)
        return value


def test_items_of_a_json_array_know_their_line_and_index(tmp_path: Path) -> None:
    path = tmp_path / "items.json"
    path.write_text('[\n  {"id": 1, "count": 2},\n\n  {"id": "b",\n   "count": 3}, {"id": 4}\n]\n')
    records = read_records(path)
    assert [(r.line, r.index) for r in records.records] == [(2, 0), (4, 1), (5, 2)]
    with pytest.raises(ValidationError) as caught:
        records.validate(Item)
    assert str(caught.value) == f"{path}:5: field '[2].count': is missing"
    assert (caught.value.field, caught.value.line, caught.value.source) == (
        "[2].count",
        5,
        str(path),
    )


def test_json_lines_know_their_line_and_skip_blank_ones(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": 1, "count": 2}\n\n{"id": 2, "count": -1}\n')
    records = read_records(path)
    assert [(r.line, r.index) for r in records.records] == [(1, None), (3, None)]
    with pytest.raises(ValidationError, match=r"items.jsonl:3: field 'count': should be greater"):
        records.validate(Item)


def test_strict_types_refuse_what_python_would_coerce(tmp_path: Path) -> None:
    for value, shown in (("true", "true"), ("1.0", "1.0"), ('"1"', '"1"')):
        path = tmp_path / "items.jsonl"
        path.write_text('{"id": 1, "count": ' + value + "}\n")
        with pytest.raises(ValidationError, match=f"should be a valid integer, got {shown}$"):
            read_records(path).validate(Item)


def test_ids_are_text_so_3_and_quoted_3_are_the_same_id(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": 3, "count": 0}\n{"id": "3", "count": 0}\n')
    with pytest.raises(ValidationError, match=r":2: field 'id': \"3\" repeats line 1"):
        read_records(path).validate(Item)
    # without a file's context (one model on its own) there is nothing to repeat
    assert Item.model_validate({"id": 3, "count": 0}).id == "3"


def test_a_key_twice_in_a_nested_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "items.json"
    path.write_text('[{"id": 1, "count": 0},\n {"id": 2, "extra": {"a": 1, "a": 2}}]')
    with pytest.raises(ValidationError, match=r":2: field '\[1\]': key \"a\" appears twice"):
        read_records(path)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.json", DEEP, ":1: field '[0]': JSON nested deeper"),
        ("a.jsonl", '{"id": 1}\n{"x": ' + DEEP + "}\n", ":2: field 'line': JSON nested deeper"),
        ("a.json", "", ": field 'file': is empty"),
        ("a.json", '{"id": 1, "count": 0}', ": field 'file': the top level is an object"),
        ("a.json", "[]", ": field 'file': holds no records"),
        ("a.json", '[{"id": 1}] [', ":1: field 'file': malformed JSON (extra data"),
        ("a.jsonl", '{"id": 1}\n{"id": \n', ":2: field 'line': malformed JSON"),
    ],
)
def test_file_guards_are_one_line_errors(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValidationError) as caught:
        read_records(path)
    assert str(caught.value).startswith(str(path) + message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_one_object_in_a_jsonl_file_is_one_record_and_a_bom_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": 1, "count": 0}\n')
    assert read_records(path).validate(Item) == [Item(id="1", count=0)]


def test_files_over_the_size_limit_are_not_parsed(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"id": 1, "count": 0}) * 10)
    with pytest.raises(ValidationError, match=r"field 'file': is 210 bytes, over the limit of 100"):
        read_records(path, max_bytes=100)


def test_record_field_paths() -> None:
    assert Record({}, 3).field(("steps", 3)) == "steps[3]"
    assert Record({}, 3, 12).field(("output", "step_scores", 0)) == "[12].output.step_scores[0]"
    assert Record({}, 3).field() == "line" and Record({}, 3, 0).field() == "[0]"


def test_located_names_the_file_and_the_line_too_deep_for_json(tmp_path: Path) -> None:
    path = tmp_path / "rollouts.jsonl"
    path.write_text('{"steps": {"r": [1.0]}}\n{"steps": ' + DEEP + "}\n")
    with pytest.raises(ValidationError, match=r"rollouts.jsonl:2: field 'line': JSON nested"):
        with located(path):
            json.loads(path.read_text().splitlines()[1])
    with pytest.raises(ValidationError, match=r"rollouts.jsonl, trajectory 3: field 'x': bad"):
        with located(path):
            raise ValidationError("x", "bad", trajectory=3)


def test_a_missing_file_or_a_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"nothing.json: field 'path': file not found"):
        read_records(tmp_path / "nothing.json")
    with pytest.raises(ValidationError, match=r"field 'path': is a directory, expected a file"):
        read_records(tmp_path)
