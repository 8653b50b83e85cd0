"""The ``reward_code`` signal: untrusted reward code checked as a syntax tree at load and run only
in the sandbox, with the same values the code gives when run in-process (here, where the test
trusts it) and one located line for each way it can be wrong."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from densereward import ConfigError, Recipe, Trajectories, ValidationError
from densereward.core.errors import NonFiniteError
from densereward.core.layouts import transitions
from densereward.pipeline import Pipeline
from densereward.sandbox import probe
from densereward.signals.reward_code import RewardCodeError, check_reward_source

needs_sandbox = pytest.mark.skipif(probe().refusal() is not None, reason="no sandbox here")

PROGRESS = """
import numpy as np

def compute_reward(obs, act, next_obs, terminated, truncated):
    gain = np.abs(obs[:, 0]) - np.abs(next_obs[:, 0])
    return gain + 5.0 * terminated - 0.1 * (act == 1)
"""


def batch() -> Trajectories:
    return Trajectories.from_episodes(
        {
            "obs": [np.array([[3.0], [2.0]]), np.array([[1.0]]), np.array([[4.0], [1.5], [0.0]])],
            "action": [[0, 1], [1], [1, 0, 0]],
        },
        {
            "terminated": [True, False, False],
            "truncated": [False, True, True],
            "final_obs": np.array([[9.0], [0.5], [2.0]]),
        },
    )


def recipe_for(file: Path, **options: object) -> Recipe:
    return Recipe.from_dict(
        {
            "signals": {"code": {"kind": "reward_code", "file": str(file), **options}},
            "estimator": {"kind": "gae"},
        }
    )


@needs_sandbox
def test_sandboxed_values_equal_the_code_run_in_process(tmp_path: Path) -> None:
    file = tmp_path / "reward.py"
    file.write_text(PROGRESS)
    out, _ = Pipeline(recipe_for(file)).transform(batch())
    namespace: dict[str, object] = {}
    exec(PROGRESS, namespace)  # trusted here: the test wrote it
    arrays = [t.numpy() for t in transitions(batch())]
    expected = namespace["compute_reward"](*arrays)  # type: ignore[operator]
    torch.testing.assert_close(out.step("code"), torch.from_numpy(np.asarray(expected)))
    assert out.step("code")[1].item() == pytest.approx(2.0 - 9.0 + 5.0 - 0.1)


@pytest.mark.parametrize(
    ("source", "stage", "message"),
    [
        ("def compute_reward(obs, act:\n    pass\n", "syntax", "line 1: syntax error"),
        ("x = 1\n", "signature", "defines no top-level function 'compute_reward'"),
        (
            "def compute_reward(obs, action):\n    pass\n",
            "signature",
            "line 1: compute_reward(obs, action) cannot be called",
        ),
        ("def compute_reward(a, b, c, d, e, f):\n    pass\n", "signature", "cannot be called"),
        ("def compute_reward(a, b, c, d, e, *, k):\n    pass\n", "signature", "cannot be called"),
        ("async def compute_reward(a, b, c, d, e):\n    pass\n", "signature", "is async"),
        (
            "class Box:\n    def compute_reward(self, a, b, c, d, e):\n        pass\n",
            "signature",
            "defines no top-level",
        ),
    ],
)
def test_bad_sources_are_refused_before_anything_runs(
    source: str, stage: str, message: str
) -> None:
    with pytest.raises(RewardCodeError, match=re.escape(message)) as caught:
        check_reward_source(source, "r.py")
    assert caught.value.stage == stage and str(caught.value).startswith("r.py: ")


@pytest.mark.parametrize(
    "source",
    [
        "def compute_reward(obs, act, next_obs, terminated, truncated): pass",
        "def compute_reward(obs, act, next_obs, terminated, truncated, scale=1.0): pass",
        "def compute_reward(*arrays): pass",
        "def compute_reward(obs, act, /, next_obs, terminated, truncated): pass",
    ],
)
def test_signatures_that_take_the_five_arrays_pass(source: str) -> None:
    check_reward_source(source, "r.py")


def test_bad_file_fails_when_the_recipe_loads_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        recipe_for(tmp_path / "missing.py")
    file = tmp_path / "broken.py"
    file.write_text("def compute_reward(obs):\n    return obs\n")
    with pytest.raises(ConfigError, match=r"broken\.py: line 1: compute_reward\(obs\)") as caught:
        recipe_for(file)
    assert "\n" not in str(caught.value)


@needs_sandbox
@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        ("return np.zeros(2)", ValidationError, r"returned shape \[2\] for 6 transitions"),
        ("return 1 / 0", ValidationError, "ZeroDivisionError: division by zero"),
        ("import socket; socket.create_connection(('1.1.1.1', 53), 1)", ValidationError, "failed"),
        ("while True: pass", ValidationError, "stopped by the sandbox's wall limit"),
    ],
)
def test_bad_values_and_failures_stop_with_one_line_naming_the_file(
    tmp_path: Path, body: str, error: type[Exception], message: str
) -> None:
    file = tmp_path / "reward.py"
    file.write_text(f"import numpy as np\n\ndef compute_reward(o, a, n, te, tr):\n    {body}\n")
    before = batch()
    with pytest.raises(error, match=message) as caught:
        Pipeline(recipe_for(file, timeout=2.0)).transform(before)
    assert str(file) in str(caught.value) and "\n" not in str(caught.value)


@needs_sandbox
def test_non_finite_reward_is_located_at_its_trajectory_and_step(tmp_path: Path) -> None:
    file = tmp_path / "reward.py"
    file.write_text(
        "import numpy as np\n\ndef compute_reward(o, a, n, te, tr):\n"
        "    r = np.zeros(len(o))\n    r[4] = np.nan\n    return r\n"
    )
    with pytest.raises(NonFiniteError) as caught:
        Pipeline(recipe_for(file)).transform(batch())
    assert (caught.value.trajectory, caught.value.step) == (2, 1)
    assert "reward.py" in str(caught.value)
