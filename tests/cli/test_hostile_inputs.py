"""Inputs a careless or hostile user gives the commands that read recipes and trajectories:
each is one line on stderr, exit 2, no traceback, and nothing the user had is changed."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.test_cli import EXAMPLE, RECIPE, assert_user_error, run

ROOT = Path(__file__).resolve().parents[2]

BOMB = "\n".join(
    [
        'a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]',
        *(
            f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]"
            for a, b in zip("abcdefgh", "bcdefghi", strict=True)
        ),
        "methods: {x: {}}",
        "estimator: {kind: gae}",
    ]
)
DEEP_YAML = "transforms: " + "[" * 400 + "]" * 400
DEEP_JSON = '{"steps": {"prm": ' + "[" * 100_000 + "]" * 100_000 + "}}\n"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


LARGE_OR_DEEP = {
    "anchor-bomb": (
        BOMB,
        r"bad\.yaml:1: invalid YAML: its aliases expand to [\d,]+ values \(at most 100,000\)",
    ),
    "deep-nesting": (DEEP_YAML, r"bad\.yaml:1: invalid YAML: nested deeper than 50"),
    "too-large": ("a: " + "x" * (1 << 20), r"bad\.yaml: a recipe is at most 1048576 bytes"),
}
NON_FINITE = {
    "nan": ("{kind: potential, gamma: .nan}", r"transforms\[0\]\.gamma: must be a finite number"),
    "inf": ("{kind: anneal, start: .inf}", r"transforms\[0\]\.start: must be a finite number"),
}


def command_line(command: str, recipe: Path, tmp_path: Path) -> tuple[str | Path, ...]:
    return {
        "recipe": ("recipe", recipe),
        "shape": ("shape", EXAMPLE, "--recipe", recipe, "--out", tmp_path / "out.parquet"),
        "run": ("run", recipe, "--local", "--out", tmp_path / "run"),
    }[command]


@pytest.mark.parametrize("case", LARGE_OR_DEEP)
@pytest.mark.parametrize("command", ["recipe", "shape", "run"])
def test_recipes_too_large_or_deep_are_refused_before_they_are_expanded(
    tmp_path: Path, case: str, command: str
) -> None:
    text, pattern = LARGE_OR_DEEP[case]
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    assert_user_error(run(*command_line(command, recipe, tmp_path)), pattern)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


@pytest.mark.parametrize("case", NON_FINITE)
@pytest.mark.parametrize("command", ["recipe", "shape"])
def test_non_finite_parameters_are_refused_when_the_recipe_loads(
    tmp_path: Path, case: str, command: str
) -> None:
    transform, pattern = NON_FINITE[case]
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(f"transforms: [{transform}]\nestimator: {{kind: gae}}\n")
    assert_user_error(run(*command_line(command, recipe, tmp_path)), pattern)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


@pytest.mark.parametrize("target", ["recipe", "input", "input-by-symlink", "input-by-hard-link"])
def test_shape_never_writes_over_its_own_inputs(tmp_path: Path, target: str) -> None:
    recipe, data = tmp_path / "recipe.yaml", tmp_path / "data.jsonl"
    recipe.write_bytes(RECIPE.read_bytes())
    data.write_bytes(EXAMPLE.read_bytes())
    if target == "input-by-symlink":
        out = tmp_path / "link.jsonl"
        out.symlink_to(data)
    elif target == "input-by-hard-link":
        out = tmp_path / "hard.jsonl"
        os.link(data, out)
    else:
        out = recipe if target == "recipe" else data
    before = {p.name: digest(p) for p in (recipe, data)}
    what = "recipe" if target == "recipe" else "input file"
    assert_user_error(
        run("shape", data, "--recipe", recipe, "--out", out), rf"--out .*: is the {what}"
    )
    assert {p.name: digest(p) for p in (recipe, data)} == before


@pytest.mark.parametrize("command", ["validate", "shape"])
def test_deeply_nested_json_is_a_line_error_not_a_recursion_traceback(
    tmp_path: Path, command: str
) -> None:
    data = tmp_path / "deep.jsonl"
    data.write_text('{"steps": {"prm": [0.5]}}\n' + DEEP_JSON)
    options = ["--recipe", RECIPE, "--out", tmp_path / "o.parquet"] if command == "shape" else []
    assert_user_error(
        run(command, data, *options),
        r"deep\.jsonl:2: field 'line': JSON nested deeper than Python's parser allows",
    )
    assert not (tmp_path / "o.parquet").exists()


def test_ctrl_c_prints_one_line_and_leaves_a_folder_the_same_command_resumes(
    tmp_path: Path,
) -> None:
    recipe = tmp_path / "run.yaml"
    recipe.write_text(
        """
name: sigint
world: {kind: control, env_id: MiniGrid-Empty-5x5-v0}
trainer: {kind: ppo, total_steps: 1024, num_envs: 2, num_steps: 64, update_epochs: 1}
seeds: [0, 1, 2]
methods: {sparse: {}}
"""
    )
    out = tmp_path / "run"
    command = [str(Path(sys.executable).with_name("densereward")), "run", str(recipe), "--local"]
    process = subprocess.Popen(
        [*command, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list((out / "pairs").glob("*.json")):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("interrupted: ") and f"--resume {out}" in lines[0]
    assert not (out / "report.md").exists()
    resumed = subprocess.run(
        [*command, "--resume", str(out)], capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (out / "report.md").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        f"sparse-seed{s}.pt" for s in range(3)
    ]
