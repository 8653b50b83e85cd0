"""``densereward sandbox FILE``: the result as JSON; exit 0 ran, 1 failed, 3 limit, 2 bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from densereward.cli import app
from densereward.sandbox import probe

pytestmark = pytest.mark.skipif(probe().refusal() is not None, reason="no sandbox here")
RUNNER = CliRunner()


def sandbox(*args: str | Path) -> tuple[int, str, str]:
    result = RUNNER.invoke(app, ["sandbox", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def reward(tmp_path: Path) -> Path:
    path = tmp_path / "reward.py"
    path.write_text(
        "def reward(x, bonus=0):\n    return [v + bonus for v in x]\n\nresult = 'ran'\n"
    )
    return path


def test_file_that_runs_exits_0_with_its_result(reward: Path) -> None:
    code, out, _ = sandbox(reward)
    record = json.loads(out)
    assert code == 0 and record["status"] == "ok" and record["value"] == "ran"


def test_function_with_json_arguments(reward: Path) -> None:
    code, out, _ = sandbox(reward, "--function", "reward", "--args", "[[1, 2]]")
    assert code == 0 and json.loads(out)["value"] == [1, 2]
    code, out, _ = sandbox(reward, "--function", "reward", "--args", '{"x": [1], "bonus": 2}')
    assert code == 0 and json.loads(out)["value"] == [3]


def test_limit_exits_3(tmp_path: Path) -> None:
    path = tmp_path / "hang.py"
    path.write_text("import time\ntime.sleep(60)\n")
    code, out, _ = sandbox(path, "--timeout", "1")
    record = json.loads(out)
    assert code == 3 and record["limit"] == "wall"


def test_program_error_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("raise ValueError('bad reward')\n")
    code, out, _ = sandbox(path)
    assert code == 1 and json.loads(out)["error"] == "ValueError: bad reward"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--timeout", "0"], "sandbox.timeout"),
        (["--memory", "-5"], "sandbox.memory_mb"),
        (["--function", "reward", "--args", "[1,"], "--args: not JSON"),
        (["--function", "reward", "--args", "3"], "--args: must be a JSON list or object"),
        (["--args", "[1]"], "--args: needs --function"),
        (["--function", "not a name"], "program.function"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(reward: Path, extra: list[str], message: str) -> None:
    code, out, err = sandbox(reward, *extra)
    assert code == 2 and out == "" and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_file_exits_2(tmp_path: Path) -> None:
    code, out, err = sandbox(tmp_path / "missing.py")
    assert code == 2 and out == "" and "no such file" in err


def test_shipped_reward_example_needs_numpy_allowed_and_runs_with_it() -> None:
    example = Path(__file__).parents[2] / "examples/text2reward/doorkey_potential.py"
    code, out, _ = sandbox(example)
    assert code == 1 and "No module named 'numpy'" in json.loads(out)["error"]
    code, out, _ = sandbox(example, "--package", "numpy")
    assert code == 0 and json.loads(out)["status"] == "ok"
    code, _, err = sandbox(example, "--package", "no_such_package_here")
    assert code == 2 and "sandbox.packages" in err and "\n" not in err.strip()
