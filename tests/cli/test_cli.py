"""The real ``densereward`` command, run as a subprocess: results and bad-input behaviour."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from densereward import Pipeline, read_trajectories

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "data" / "prm_rollouts.jsonl"
RECIPE = ROOT / "src" / "densereward" / "recipes" / "prm_clip_delta.yaml"


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).with_name("densereward")
    command = (
        [str(executable)] if executable.exists() else [sys.executable, "-m", "densereward.cli"]
    )
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=120)


def assert_user_error(result: subprocess.CompletedProcess[str], pattern: str) -> None:
    """Exit code 2, exactly one line on stderr matching ``pattern``, no traceback."""
    import re

    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert re.search(pattern, lines[0]), lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_shape_writes_what_the_python_pipeline_computes(tmp_path: Path) -> None:
    out = tmp_path / "shaped.parquet"
    result = run("shape", EXAMPLE, "--recipe", RECIPE, "--out", out)
    assert result.returncode == 0, result.stderr
    written = read_trajectories(out)
    expected = Pipeline.from_yaml(RECIPE)(read_trajectories(EXAMPLE))
    torch.testing.assert_close(written.step("advantage"), expected.advantages)
    torch.testing.assert_close(written.step("return"), expected.returns)


GOOD_LINE = '{"steps": {"prm": [0.5, 0.9]}, "outcome": 1.0, "group": 0}\n'

BAD_INPUTS = {
    "malformed_json": (
        GOOD_LINE + '{"steps": {"prm": [0.5,, 0.9]}}\n',
        r"bad\.jsonl:2: field 'line': malformed JSON",
    ),
    "nan_reward": (
        GOOD_LINE + '{"steps": {"prm": [0.5, NaN]}, "outcome": 1.0, "group": 0}\n',
        r"bad\.jsonl:2, trajectory 1, step 1: field 'steps\.prm': NaN is not a finite number",
    ),
    "mismatched_lengths": (
        '{"steps": {"prm": [0.5, 0.9], "value": [0.1]}, "outcome": 1.0, "group": 0}\n',
        r"bad\.jsonl:1: field 'steps\.value': has 1 steps, other columns have 2",
    ),
    "infinite_outcome": (
        GOOD_LINE + '{"steps": {"prm": [0.5]}, "outcome": Infinity, "group": 0}\n',
        r"bad\.jsonl:2, trajectory 1: field 'outcome': inf is not a finite number",
    ),
    "empty_file": ("", r"bad\.jsonl: field 'file': contains no trajectories"),
    "blank_lines_only": ("\n\n  \n", r"contains no trajectories"),
    "not_an_object": ("[1, 2]\n", r"bad\.jsonl:1: field 'line': expected a JSON object"),
    "missing_steps": ('{"outcome": 1.0}\n', r"bad\.jsonl:1: field 'steps': missing"),
    "string_reward": (
        GOOD_LINE + '{"steps": {"prm": [0.5, "high"]}, "outcome": 1.0, "group": 0}\n',
        r"bad\.jsonl:2, trajectory 1, step 1: field 'steps\.prm': expected a number",
    ),
    "empty_trajectory": (
        '{"steps": {"prm": []}, "outcome": 1.0, "group": 0}\n',
        r"bad\.jsonl:1.*has no steps",
    ),
    "inconsistent_columns": (
        GOOD_LINE + '{"steps": {"prm": [0.5], "x": [1.0]}, "outcome": 1.0, "group": 0}\n',
        r"bad\.jsonl:2: field 'steps\.x'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gets_one_line_exit_2_no_output_input_untouched(
    tmp_path: Path, case: str
) -> None:
    text, pattern = BAD_INPUTS[case]
    source = tmp_path / "bad.jsonl"
    source.write_text(text)
    before = digest(source)
    out = tmp_path / "out.parquet"
    assert_user_error(run("shape", source, "--recipe", RECIPE, "--out", out), pattern)
    assert not out.exists() and list(tmp_path.iterdir()) == [source]
    assert digest(source) == before


def test_binary_garbage_is_rejected_cleanly(tmp_path: Path) -> None:
    for name in ("garbage.jsonl", "garbage.parquet"):
        source = tmp_path / name
        source.write_bytes(bytes(range(256)) * 4)
        result = run("validate", source)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
        assert name in result.stderr and "Traceback" not in result.stderr


RECIPE_ERRORS = {
    "unknown_component": (
        "transforms:\n  - {kind: clipp}\nestimator: {kind: grpo}\n",
        r"transforms\[0\]\.kind: unknown transform 'clipp' \(known: .*clip,",
    ),
    "wrong_parameter_type": (
        "transforms:\n  - {kind: clip, eta: high}\nestimator: {kind: grpo}\n",
        r"transforms\[0\]\.eta: expected a number, got str 'high'",
    ),
    "unknown_parameter": (
        "estimator: {kind: gae, gama: 0.9}\n",
        r"estimator\.gama: unknown estimator 'gae' parameter",
    ),
    "internal_state_is_not_a_parameter": (
        "transforms:\n  - {kind: blend, history: [1.0]}\nestimator: {kind: gae}\n",
        r"transforms\[0\]\.history: unknown transform 'blend' parameter \(known: "
        r"auxiliary, primary, target, initial, learning_rate, gamma, minimum, maximum\)",
    ),
    "missing_estimator": ("transforms: []\n", r"missing 'estimator'"),
    "bad_yaml": ("estimator: {kind: grpo\n", r"invalid YAML"),
    "unknown_literal": (
        "estimator: {kind: igpo, normalize: sometimes}\n",
        r"expected one of 'returns', 'rewards'",
    ),
}


@pytest.mark.parametrize("case", sorted(RECIPE_ERRORS))
def test_bad_recipe_gets_one_line_exit_2_and_no_output(tmp_path: Path, case: str) -> None:
    text, pattern = RECIPE_ERRORS[case]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    out = tmp_path / "out.jsonl"
    assert_user_error(run("shape", EXAMPLE, "--recipe", recipe, "--out", out), pattern)
    assert not out.exists()


def test_missing_column_for_the_recipe_fails_cleanly(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("estimator: {kind: gae}\n")  # needs a 'value' column the example lacks
    result = run("shape", EXAMPLE, "--recipe", recipe, "--out", tmp_path / "o.jsonl")
    assert result.returncode == 2
    assert "field 'steps.value': no such step column" in result.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_shape_refuses_to_overwrite_its_input(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    shutil.copy(EXAMPLE, source)
    before = digest(source)
    result = run("shape", source, "--recipe", RECIPE, "--out", source)
    assert result.returncode == 2 and "refusing to overwrite" in result.stderr
    assert digest(source) == before


def test_validate_and_components(tmp_path: Path) -> None:
    result = run("validate", EXAMPLE)
    assert result.returncode == 0 and "192" in result.stdout
    listing = run("components", "--kind", "estimator")
    assert listing.returncode == 0
    for name in (
        "gae",
        "grpo",
        "dr_grpo",
        "rloo",
        "reinforce_pp",
        "step_grpo",
        "prime",
        "igpo",
        "fork_relative",
    ):
        assert name in listing.stdout
    worlds = run("components", "--kind", "world")
    assert worlds.returncode == 0
    assert "control" in worlds.stdout and "reasoning" in worlds.stdout
    assert "env_id" in worlds.stdout and "sft_noise" in worlds.stdout  # parameters, listed once
    assert run("components", "--kind", "nonsense").returncode == 2
    assert json.loads(EXAMPLE.read_text().splitlines()[0])["group"] == 0


def test_parquet_with_disagreeing_step_lengths_is_rejected(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = tmp_path / "bad.parquet"
    pq.write_table(
        pa.table(
            {
                "steps.prm": [[0.5, 0.9], [0.1]],
                "steps.value": [[0.0, 0.0], [0.0, 0.0]],
                "outcome": [1.0, 0.0],
            }
        ),
        source,
    )
    before = digest(source)
    out = tmp_path / "out.jsonl"
    result = run("shape", source, "--recipe", RECIPE, "--out", out)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "trajectory 1: field 'steps.value': has 2 steps, steps.prm has 1" in result.stderr
    assert not out.exists() and digest(source) == before


DATA = Path(__file__).resolve().parents[1] / "data"


def test_evaluate_reproduces_rewardmath_and_scores_processbench(tmp_path):
    result = run("evaluate", "rewardmath", DATA / "rewardmath_ArmoRM_reward.json")
    assert result.returncode == 0 and "Acc 20.50, MRR 42.18" in " ".join(result.stdout.split())
    result = run(
        "evaluate", "rewardbench", DATA / "rewardbench_mathprm_steps_mathshepherd_scores.json"
    )
    assert result.returncode == 0 and "accuracy 94.4" in " ".join(result.stdout.split())
    items = json.loads((DATA / "gsm8k.json").read_text())
    predictions = tmp_path / "predictions.jsonl"
    # correct on every erroneous item, wrong on every correct one: acc_err 100, acc_corr 0, F1 0
    predictions.write_text(
        "".join(
            json.dumps({"id": i["id"], "prediction": i["label"] if i["label"] >= 0 else 0}) + "\n"
            for i in items
        )
    )
    result = run("evaluate", "processbench", DATA / "gsm8k.json", "--predictions", predictions)
    assert result.returncode == 0
    assert re.search(r"gsm8k\s*│\s*400\s*│\s*100\.0\s*│\s*0\.0\s*│\s*0\.0", result.stdout)


def test_evaluate_bad_input_is_one_line(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "gsm8k-0", "prediction": 1}\n{"id": \n')
    assert_user_error(
        run("evaluate", "processbench", DATA / "gsm8k.json", "--predictions", broken),
        r"broken.jsonl:2: field 'line': malformed JSON",
    )
    binary = tmp_path / "binary.json"
    binary.write_bytes(bytes(range(256)) * 4)
    assert_user_error(
        run("evaluate", "rewardmath", binary), r"binary.json: field 'file': is not UTF-8 text"
    )
    assert_user_error(
        run(
            "evaluate",
            "rewardmath",
            DATA / "rewardmath_ArmoRM_reward.json",
            "--aggregate",
            "median",
        ),
        r"--aggregate: unknown 'median'",
    )


def test_tasks_files_carry_the_verifiers_labels_and_round_trip_through_the_readers(tmp_path):
    """Each exported format, checked against the verifier on the same problems (drawn again
    from the seed) and read back by the readers that consume it; scoring the exported
    ProcessBench file with its own labels as predictions gives F1 100."""
    from densereward.evaluation.process import read_processbench
    from densereward.io.trl import read_trl
    from densereward.worlds.reasoning.tasks import (
        Difficulty,
        TaskSpec,
        first_error,
        grade,
        sample_problems,
    )

    spec = TaskSpec(("arithmetic", "equation", "lists"), Difficulty(1, 3))
    problems = [s.problem for s in sample_problems(spec, 300, 7)]
    common = ["--problems", "300", "--families", "arithmetic,equation,lists"]
    common += ["--min-ops", "1", "--max-ops", "3", "--seed", "7"]
    files = {
        name: tmp_path / f"{name}.jsonl" for name in ("processbench", "stepwise", "preference")
    }
    for name, path in files.items():
        assert run("tasks", name, "--out", path, *common).returncode == 0

    items = read_processbench(files["processbench"])
    assert len(items) == len(problems)
    for problem, item in zip(problems, items, strict=True):
        body, _, answer = item["steps"][-1].rpartition("#")
        steps = [*item["steps"][:-1], body]
        assert item["problem"] == problem.prompt
        # the verifier's earliest error; a solution a step short is charged to its last step
        assert item["label"] == min(first_error(problem, steps), len(steps) - 1)
        assert item["final_answer_correct"] == (answer == problem.answer)
    wrong = sum(item["label"] >= 0 for item in items)
    assert abs(wrong / len(items) - 0.5) < 4 * (0.25 / len(items)) ** 0.5
    predictions = tmp_path / "exact.jsonl"
    predictions.write_text(
        "".join(json.dumps({"id": i["id"], "prediction": i["label"]}) + "\n" for i in items)
    )
    result = run("evaluate", "processbench", files["processbench"], "--predictions", predictions)
    assert re.search(
        r"processbench\s*│\s*300\s*│\s*100\.0\s*│\s*100\.0\s*│\s*100\.0", result.stdout
    )

    batch = read_trl(files["stepwise"])
    assert len(batch) == len(problems)
    records = [json.loads(line) for line in files["stepwise"].read_text().splitlines()]
    for problem, record in zip(problems, records, strict=True):
        error = min(first_error(problem, record["completions"]), len(record["labels"]) - 1)
        cut = len(record["completions"]) if error < 0 else error
        assert record["labels"] == [True] * cut + [False] * (len(record["labels"]) - cut)
    assert [float(v) for r in records for v in r["labels"]] == batch.step("label").tolist()

    pairs = [json.loads(line) for line in files["preference"].read_text().splitlines()]
    by_prompt = {p.prompt: p for p in problems}
    assert len(pairs) > 250
    for pair in pairs:
        assert grade(by_prompt[pair["prompt"]], pair["chosen"]).correct
        assert not grade(by_prompt[pair["prompt"]], pair["rejected"]).correct

    again = tmp_path / "again.jsonl"
    assert run("tasks", "processbench", "--out", again, *common).returncode == 0
    assert digest(again) == digest(files["processbench"])


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["sokoban"], r"format: unknown 'sokoban'"),
        (["stepwise", "--families", "algebra"], r"--families: unknown task family 'algebra'"),
        (["stepwise", "--min-ops", "4", "--max-ops", "2"], r"--min-ops/--max-ops"),
        (["stepwise", "--error-fraction", "1.5"], r"--error-fraction: must be in \[0, 1\]"),
        (["stepwise", "--problems", "0"], r"--problems: must be at least 1"),
    ],
)
def test_tasks_bad_options_are_one_line_and_write_nothing(tmp_path, args, pattern):
    out = tmp_path / "tasks.jsonl"
    assert_user_error(run("tasks", *args, "--out", out), pattern)
    assert list(tmp_path.iterdir()) == []
