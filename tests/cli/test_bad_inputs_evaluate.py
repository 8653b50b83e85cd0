"""Garbage into ``densereward evaluate ...`` and ``densereward compare``: every case ends as one
line ``error: FILE:LINE: field 'PATH': problem`` on stderr, exit code 2, no traceback, nothing on
stdout and no file written.

Each case asserts the specific rejection (file, line or item, field path), which the readers
before issue #13 did not make: they scored NaN, read ``true`` as step 1, kept the last of two
ids or two chosen answers, reported F1 0.0 for a subset without errors, and crashed with a
``RecursionError`` on deeply nested JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from densereward.cli import app

NAN, INF = float("nan"), float("inf")
DEEP = "[" * 100_000 + "]" * 100_000


@dataclass(frozen=True)
class Target:
    """One input file of one command, with valid records for it and for the command's others."""

    file: str
    records: list[dict[str, Any]]
    command: Callable[[Path, Path], list[str]]
    """(the file under test, the folder) -> arguments; writes the command's other inputs."""

    def text(self, records: list[Any]) -> str:
        if self.file.endswith(".json"):
            return json.dumps(records, indent=1)
        return "".join(json.dumps(r) + "\n" for r in records)


def write(folder: Path, name: str, records: list[dict[str, Any]]) -> Path:
    path = folder / "other" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(TARGETS[name.split(".")[0]].text(records))
    return path


ITEMS = [
    {"id": "a", "steps": ["x = 1", "x + 1 = 3"], "label": 1, "problem": "..."},
    {"id": "b", "steps": ["y = 2"], "label": -1},
]
PREDICTIONS = [{"id": "a", "prediction": 1}, {"id": "b", "prediction": -1}]
ROLLOUTS = [
    {"steps": {"prm": [0.9, 0.2], "value": [0.1, 0.5], "obs": [0.0, 1.0]}, "outcome": 0.0},
    {"steps": {"prm": [0.8, 0.7], "value": [0.3, 0.2], "obs": [0.0, 2.0]}, "outcome": 1.0},
]
TARGETS: dict[str, Target] = {
    "data": Target(
        "data.json",
        ITEMS,
        lambda bad, tmp: [
            "evaluate",
            "processbench",
            str(bad),
            "--predictions",
            str(write(tmp, "predictions.jsonl", PREDICTIONS)),
        ],
    ),
    "predictions": Target(
        "predictions.jsonl",
        PREDICTIONS,
        lambda bad, tmp: [
            "evaluate",
            "processbench",
            str(write(tmp, "data.json", ITEMS)),
            "--predictions",
            str(bad),
        ],
    ),
    "rewardmath": Target(
        "rewardmath.json",
        [{"score": [0.9, 0.1, 0.2]}, {"score": [0.5, 0.6, 0.1]}],
        lambda bad, tmp: ["evaluate", "rewardmath", str(bad)],
    ),
    "rewardbench": Target(
        "rewardbench.json",
        [
            {"problem_id": 0, "solution_type": "chosen", "output": {"step_scores": [0.9, 0.8]}},
            {"problem_id": 0, "solution_type": "rejected", "output": {"step_scores": [0.9, 0.1]}},
        ],
        lambda bad, tmp: ["evaluate", "rewardbench", str(bad)],
    ),
    "best-of-n": Target(
        "rollouts.jsonl", ROLLOUTS, lambda bad, tmp: ["evaluate", "best-of-n", str(bad)]
    ),
    "compare": Target(
        "rollouts.jsonl", ROLLOUTS, lambda bad, tmp: ["compare", str(bad), "--rewards", "prm,value"]
    ),
}
RECORD_TARGETS = ("data", "predictions", "rewardmath", "rewardbench")


def assert_rejected(
    tmp_path: Path, target: str, text: str, pattern: str, extra: tuple[str, ...] = ()
) -> None:
    """Exit 2, one line ``error: <file>...`` matching ``pattern``, no traceback, no output."""
    spec = TARGETS[target]
    bad = tmp_path / spec.file
    bad.write_text(text)
    args = [*spec.command(bad, tmp_path), *extra]
    before = sorted(tmp_path.rglob("*"))
    result = CliRunner().invoke(app, args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.exception, result.stdout, result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert re.search(re.escape(str(bad)) + pattern, lines[0]), lines[0]
    assert result.stdout == ""
    assert sorted(tmp_path.rglob("*")) == before


def test_the_valid_files_are_accepted(tmp_path: Path) -> None:
    """The cases below break one thing each in files that are otherwise accepted."""
    for name, spec in TARGETS.items():
        folder = tmp_path / name
        folder.mkdir()
        good = folder / spec.file
        good.write_text(spec.text(spec.records))
        result = CliRunner().invoke(app, spec.command(good, folder))
        assert result.exit_code == 0, (name, result.stderr)


# ----------------------------------------------------------------- the same garbage everywhere
# (text, pattern after the file name); ``{first}``: the target's first valid record as one line
ANY_FILE = {
    "empty": ("", r": field 'file': is empty"),
    "blank": ("\n  \n\t\n", r": field 'file': is empty"),
    "empty_array": ("[]\n", r": field 'file': holds no records"),
    "top_level_object": ('{\n  "data": []\n}\n', r": field 'file': the top level is an object"),
    "top_level_number": ("3\n", r": field 'file': the top level is a number"),
    "deep_array": (DEEP, r":1: field '\[0\]': JSON nested deeper than Python's parser allows"),
    "deep_line": (
        '{first}\n{"score": ' + DEEP + "}\n",
        r":2: field 'line': JSON nested deeper than Python's parser allows",
    ),
    "key_twice": (
        '[\n  {"id": "a", "id": "b"}\n]',
        r":2: field '\[0\]': key \"id\" appears twice in one object",
    ),
    "not_objects": ("[1, 2]", r":1: field '\[0\]': expected a JSON object, got a number"),
    "array_then_garbage": ("[{first}]\n]\n", r":2: field 'file': malformed JSON \(extra data"),
    "trailing_comma": ("[{first},\n]", r":2: field 'file': malformed JSON \(Expecting value"),
}


@pytest.mark.parametrize("target", RECORD_TARGETS)
@pytest.mark.parametrize("case", sorted(ANY_FILE))
def test_garbage_records_file(tmp_path: Path, target: str, case: str) -> None:
    text, pattern = ANY_FILE[case]
    first = json.dumps(TARGETS[target].records[0])
    assert_rejected(tmp_path, target, text.replace("{first}", first), pattern)


@pytest.mark.parametrize("target", ["best-of-n", "compare"])
@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        pytest.param(
            '{first}\n{"steps": ' + DEEP + "}\n", r":2: field 'line': JSON nested", id="deep_line"
        ),
        pytest.param(DEEP, r":1: field 'line': JSON nested deeper", id="deep_first_line"),
        # read_trajectories refused this before issue #13 too: pinned, not new
        pytest.param("", r": field 'file': contains no trajectories", id="empty"),
    ],
)
def test_garbage_trajectories_file(tmp_path: Path, target: str, text: str, pattern: str) -> None:
    first = json.dumps(TARGETS[target].records[0])
    assert_rejected(tmp_path, target, text.replace("{first}", first), pattern)


# ----------------------------------------------------------------- what each format must hold
def changed(target: str, index: int, **fields: Any) -> list[dict[str, Any]]:
    """The target's valid records with fields of record ``index`` replaced (``None``: removed)."""
    records = [dict(r) for r in TARGETS[target].records]
    records[index].update(fields)
    records[index] = {k: v for k, v in records[index].items() if v is not None}
    return records


def step_scores(*scores: Any) -> dict[str, Any]:
    return {"step_scores": list(scores)}


CHOSEN = TARGETS["rewardbench"].records[0]
REJECTED = TARGETS["rewardbench"].records[1]
# fmt: off
FIELD_CASES: list[tuple[str, str, list[Any], tuple[str, ...], str]] = [
    # (case, target, records, extra options, pattern after the file name)
    ("label_bool", "data", changed("data", 0, label=True), (),
     r":2: field '\[0\].label': should be a valid integer, got true"),
    ("label_string", "data", changed("data", 0, label="1"), (),
     r":\d+: field '\[0\].label': should be a valid integer, got \"1\""),
    ("label_float", "data", changed("data", 0, label=1.5), (),
     r":2: field '\[0\].label': should be a valid integer, got 1.5"),
    ("label_below_minus_one", "data", changed("data", 1, label=-2), (),
     r":\d+: field '\[1\].label': should be greater than or equal to -1, got -2"),
    ("label_past_last_step", "data", changed("data", 0, label=2), (),
     r":2: field '\[0\].label': 2 is past the last of 2 steps"),
    ("label_missing", "data", changed("data", 0, label=None), (),
     r":2: field '\[0\].label': is missing"),
    ("steps_empty", "data", changed("data", 1, steps=[], label=-1), (),
     r":\d+: field '\[1\].steps': should have at least 1 item, not 0"),
    ("steps_not_text", "data", changed("data", 0, steps=["x", 2]), (),
     r":2: field '\[0\].steps\[1\]': should be a valid string, got 2"),
    ("id_twice", "data", changed("data", 1, id="a"), (),
     r":\d+: field '\[1\].id': \"a\" repeats item 0 \(line 2\)"),
    ("id_bool", "data", changed("data", 1, id=True), (),
     r":\d+: field '\[1\].id': must be a string or an integer, got true"),
    ("no_erroneous_item", "data", changed("data", 0, label=-1), (),
     r": field 'label': no erroneous items \(label ≥ 0\): F1 needs both"),
    ("no_correct_item", "data", changed("data", 1, label=0), (),
     r": field 'label': no correct items \(label -1\): F1 needs both"),
    ("prediction_bool", "predictions", changed("predictions", 1, prediction=True), (),
     r":2: field 'prediction': should be a valid integer, got true"),
    ("prediction_nan", "predictions", changed("predictions", 0, prediction=NAN), (),
     r":1: field 'prediction': should be a valid integer, got NaN"),
    ("prediction_missing", "predictions", changed("predictions", 0, prediction=None), (),
     r":1: field 'prediction': is missing"),
    ("prediction_id_twice", "predictions", [*PREDICTIONS, {"id": "a", "prediction": 0}], (),
     r":3: field 'id': \"a\" repeats line 1"),
    ("prediction_for_an_id_missing", "predictions", PREDICTIONS[:1], (),
     r": field 'prediction': no prediction for id 'b' of .*data.json"),
    ("prediction_past_last_step", "predictions", changed("predictions", 0, prediction=2), (),
     r": field 'prediction': 2 for id 'a' is past the last of its 2 steps"),
    ("score_nan", "rewardmath", changed("rewardmath", 1, score=[0.5, NAN, 0.1]), (),
     r":\d+: field '\[1\].score\[1\]': should be a finite number, got NaN"),
    ("score_infinite", "rewardmath", changed("rewardmath", 0, score=[INF, 0.1, 0.2]), (),
     r":2: field '\[0\].score\[0\]': should be a finite number, got Infinity"),
    ("step_score_nan", "rewardmath", changed("rewardmath", 0, score=[[0.5, NAN], 0.1, 0.2]), (),
     r":2: field '\[0\].score\[0\]\[1\]': should be a finite number, got NaN"),
    ("score_bool", "rewardmath", changed("rewardmath", 0, score=[True, 0.1, 0.2]), (),
     r":2: field '\[0\].score\[0\]': should be a number or a non-empty list of numbers, got true"),
    ("score_string", "rewardmath", changed("rewardmath", 0, score=["0.9", 0.1, 0.2]), (),
     r":2: field '\[0\].score\[0\]': should be a number or a non-empty list of numbers"),
    ("no_wrong_solution", "rewardmath", changed("rewardmath", 0, score=[0.9]), (),
     r":2: field '\[0\].score': should have at least 2 items, not 1"),
    ("score_list_empty", "rewardmath", changed("rewardmath", 0, score=[]), (),
     r":2: field '\[0\].score': should have at least 2 items, not 0"),
    ("step_scores_empty", "rewardmath", changed("rewardmath", 0, score=[[], 0.1, 0.2]), (),
     r":2: field '\[0\].score\[0\]': should have at least 1 item, not 0"),
    ("score_missing", "rewardmath", changed("rewardmath", 1, score=None), (),
     r":\d+: field '\[1\].score': is missing"),
    ("solutions_disagree", "rewardmath", changed("rewardmath", 1, score=[0.5, 0.6]), (),
     r":\d+: field '\[1\].score': has 2 solutions, item 0 \(line 2\) has 3"),
    ("references_disagree", "rewardmath",
     changed("rewardmath", 0, solution_reference=["human", "gpt"]), (),
     r":2: field '\[0\].score': has 3 solutions, solution_reference names 2"),
    ("product_of_negative_scores", "rewardmath",
     changed("rewardmath", 0, score=[[-0.5, 0.2], [0.1, 0.3], [0.2, 0.2]]),
     ("--aggregate", "product"),
     r":2: field '\[0\]': the product of a solution's step scores is NaN"),
    ("chosen_twice", "rewardbench", [CHOSEN, REJECTED, CHOSEN], (),
     r":\d+: field '\[2\].solution_type': 'chosen' for problem_id '0' repeats item 0 \(line 2\)"),
    ("chosen_without_rejected", "rewardbench", [CHOSEN, {**REJECTED, "problem_id": 1}], (),
     r":2: field '\[0\].solution_type': problem_id '0' has a chosen solution but no rejected"),
    ("solution_type_unknown", "rewardbench", changed("rewardbench", 1, solution_type="wrong"), (),
     r":\d+: field '\[1\].solution_type': should be 'chosen' or 'rejected', got \"wrong\""),
    ("step_score_infinite", "rewardbench", changed("rewardbench", 0, output=step_scores(INF)), (),
     r":2: field '\[0\].output.step_scores\[0\]': should be a finite number, got Infinity"),
    ("step_scores_missing", "rewardbench", changed("rewardbench", 0, output={}), (),
     r":2: field '\[0\].output.step_scores': is missing"),
    ("output_not_an_object", "rewardbench", changed("rewardbench", 0, output=[0.5]), (),
     r":2: field '\[0\].output': should be a JSON object, got \[0.5\]"),
    ("problem_id_float", "rewardbench", changed("rewardbench", 0, problem_id=0.5), (),
     r":2: field '\[0\].problem_id': must be a string or an integer, got 0.5"),
]
# fmt: on


@pytest.mark.parametrize(
    ("target", "records", "extra", "pattern"),
    [pytest.param(*case[1:], id=case[0]) for case in FIELD_CASES],
)
def test_bad_field(
    tmp_path: Path, target: str, records: list[Any], extra: tuple[str, ...], pattern: str
) -> None:
    assert_rejected(tmp_path, target, TARGETS[target].text(records), pattern, extra)


def rollout(index: int, **columns: Any) -> list[dict[str, Any]]:
    """The valid rollouts with step columns of trajectory ``index`` replaced, or per-trajectory
    ones through ``episode_``: ``rollout(1, prm=[0.5, NAN])``, ``rollout(1, episode_outcome=0.5)``.
    """
    records = json.loads(json.dumps(ROLLOUTS))
    for name, value in columns.items():
        if name.startswith("episode_"):
            records[index][name.removeprefix("episode_")] = value
        else:
            records[index]["steps"][name] = value
    return records


def pairs_per_step(column: str) -> list[dict[str, Any]]:
    """The valid rollouts with two numbers per step in ``column``."""
    return [
        {**r, "steps": {**r["steps"], column: [[v, v] for v in r["steps"][column]]}}
        for r in ROLLOUTS
    ]


# fmt: off
TRAJECTORY_CASES: list[tuple[str, str, list[Any], tuple[str, ...], str]] = [
    ("correct_not_0_or_1", "best-of-n", rollout(1, episode_outcome=0.5), (),
     r", trajectory 1: field 'outcome': must be 0 or 1 \(correct or not\), got 0.5"),
    ("correct_is_a_score_column", "best-of-n",
     [{**r, "quality": q} for r, q in zip(ROLLOUTS, [1.0, 0.3], strict=True)],
     ("--correct", "quality"),
     r", trajectory 1: field 'quality': must be 0 or 1"),
    ("correct_column_missing", "best-of-n", ROLLOUTS, ("--correct", "verdict"),
     r": field 'verdict': no such per-trajectory column \(have: outcome\)"),
    ("score_column_missing", "best-of-n", ROLLOUTS, ("--score", "orm"),
     r": field 'steps.orm': no such step column"),
    ("score_not_one_number_per_step", "best-of-n", pairs_per_step("prm"), (),
     r": field 'steps.prm': must hold one number per step, got \[2\] each"),
    # read_trajectories refused these two before issue #13 too: pinned, not new
    ("score_nan", "best-of-n", rollout(1, prm=[0.5, NAN]), (),
     r":2, trajectory 1, step 1: field 'steps.prm': NaN is not a finite number"),
    ("reward_nan", "compare", rollout(0, value=[INF, 0.1]), (),
     r":1, trajectory 0, step 0: field 'steps.value': inf is not a finite number"),
    ("product_of_negative_scores", "best-of-n",
     rollout(0, prm=[-0.5, 0.2]), ("--aggregate", "product"),
     r", trajectory 0: field 'steps.prm': the product of the step scores is NaN"),
    ("features_missing", "compare", ROLLOUTS, ("--features", "state"),
     r": field 'steps.state': no such step column \(have: obs, prm, value\)"),
    ("reward_missing", "compare", ROLLOUTS, ("--rewards", "prm,orm"),
     r": field 'steps.orm': no such step column"),
    ("reward_named_twice", "compare", ROLLOUTS, ("--rewards", "prm,value,prm"),
     r": field 'steps.prm': named twice among the rewards to compare"),
    ("reward_not_one_number_per_step", "compare", pairs_per_step("value"), (),
     r": field 'steps.value': a reward must be one number per step, got \[2\]"),
    ("final_features_wrong_width", "compare",
     [{**r, "terminated": False, "final_obs": [0.0, 1.0]} for r in ROLLOUTS], (),
     r": field 'final_obs': has 2 features per trajectory, obs has 1"),
    ("final_features_missing", "compare", [{**r, "terminated": False} for r in ROLLOUTS], (),
     r", trajectory 0: field 'final_obs': needed for trajectories that did not terminate"),
]
# fmt: on


@pytest.mark.parametrize(
    ("target", "records", "extra", "pattern"),
    [pytest.param(*case[1:], id=case[0]) for case in TRAJECTORY_CASES],
)
def test_bad_trajectories(
    tmp_path: Path, target: str, records: list[Any], extra: tuple[str, ...], pattern: str
) -> None:
    assert_rejected(tmp_path, target, TARGETS[target].text(records), pattern, extra)
