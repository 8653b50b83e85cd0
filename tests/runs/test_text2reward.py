"""The Text2Reward loop against a real loopback server answering from a script: bad candidates
are rejected at the stage they fail with the reason fed back, good ones train PPO with their
reward (run in the sandbox) added, and the next round's request carries the statistics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from densereward.cli import app
from densereward.judges.chat_server import make_scripted_chat_app
from densereward.runs import RunRecipe
from densereward.runs.text2reward import Text2RewardConfig, extract_code, run_text2reward
from densereward.sandbox import probe
from densereward.signals.judge_client import JudgeClient
from tests.servers import running

pytestmark = pytest.mark.skipif(probe().refusal() is not None, reason="no sandbox here")

CONSTANT = "import numpy as np\n\ndef compute_reward(obs, act, next_obs, terminated, truncated):\n    return np.full(len(obs), 0.25)\n"
KEY = (
    "import numpy as np\n\ndef compute_reward(obs, act, next_obs, terminated, truncated):\n"
    "    had = obs[:, 3, 6, 0] == 5\n    has = next_obs[:, 3, 6, 0] == 5\n"
    "    return 0.5 * (has & ~had).astype(float)\n"
)
ROUND_1 = [
    f"Here is a reward.\n```python\n{CONSTANT}```\nIt pays every step.",
    "```python\ndef compute_reward(obs, act:\n    return 0\n```",
    "```python\ndef compute_reward(obs, action):\n    return obs\n```",
]
ROUND_2 = [
    f"```python\n{KEY}```",
    "```python\nimport numpy as np\ndef compute_reward(obs, act, next_obs, terminated, truncated):\n"
    "    return np.log(np.zeros(len(obs)))\n```",
    "```python\ndef compute_reward(obs, act, next_obs, terminated, truncated):\n"
    "    while True:\n        pass\n```",
]

RECIPE = {
    "name": "tiny-doorkey",
    "world": {"kind": "control", "env_id": "MiniGrid-DoorKey-5x5-v0", "evaluation_episodes": 2},
    "trainer": {"kind": "ppo", "total_steps": 1024, "num_envs": 4, "num_steps": 128},
    "methods": {"sparse": {}},
}


def test_extract_code_takes_the_block_that_defines_the_function() -> None:
    reply = "intro\n```\nprint(1)\n```\nthen\n```python\ndef compute_reward(o):\n    pass\n```"
    assert extract_code(reply) == "def compute_reward(o):\n    pass\n"
    assert extract_code("```py\nx = 1\n```") == "x = 1\n"
    assert extract_code("def compute_reward(): pass") == "def compute_reward(): pass"


def test_loop_rejects_trains_and_feeds_back(tmp_path: Path) -> None:
    recipe = RunRecipe.from_dict(RECIPE)
    config = Text2RewardConfig(rounds=2, candidates=3, timeout=3.0, trial_transitions=64)
    with (
        running(make_scripted_chat_app(ROUND_1 + ROUND_2)) as base,
        JudgeClient(f"{base}/v1", "scripted", cache=None, retries=0) as client,
    ):
        candidates = run_text2reward(recipe, client, config, tmp_path)
        assert client.stats.requests == 2
    stages = [(c.round, c.index, c.stage) for c in candidates]
    assert stages == [
        (1, 1, "trained"),
        (1, 2, "syntax"),
        (1, 3, "signature"),
        (2, 1, "trained"),
        (2, 2, "trial"),
        (2, 3, "trial"),
    ]
    problems = {(c.round, c.index): c.problem for c in candidates}
    assert problems[(1, 2)].startswith("line 1: syntax error")
    assert "compute_reward(obs, action) cannot be called" in problems[(1, 3)]
    assert "non-finite value (-inf)" in problems[(2, 2)]
    assert "wall limit" in problems[(2, 3)]

    # the sandboxed constant reward reached PPO's shaped reward, exactly, on every update
    constant = candidates[0].statistics
    assert constant is not None
    assert constant["code_reward_per_step"] == pytest.approx(0.25, abs=1e-6)
    key = candidates[3].statistics
    assert key is not None and 0.0 <= key["code_reward_per_step"] < 0.25

    # round 2 was asked with round 1's results: the best code so far and every reason
    conversation = [json.loads(line) for line in (tmp_path / "conversation.jsonl").open()]
    assert [c["round"] for c in conversation] == [1, 2]
    first, second = conversation[0]["messages"], conversation[1]["messages"]
    assert len(first) == 2 and second[:2] == first
    assert second[2] == ["assistant", f"```python\n{CONSTANT.rstrip()}\n```"]
    feedback = second[3][1]
    assert "Candidate 2: rejected at the syntax check: line 1: syntax error" in feedback
    assert "Candidate 3: rejected at the signature check" in feedback
    assert f"held-out success {constant['held_out_success']:.2f}" in feedback
    assert "+0.2500 (the environment's" in feedback

    def strict(constant: str) -> None:
        raise AssertionError(f"not strict JSON: {constant}")

    lines = (tmp_path / "candidates.jsonl").open()
    records = [json.loads(line, parse_constant=strict) for line in lines]
    assert [r["candidate"] for r in records] == ["sparse", 1, 2, 3, 1, 2, 3]
    best = max(
        (c for c in candidates if c.statistics),
        key=lambda c: (c.statistics["final_success"], -c.statistics["steps_to_threshold"]),  # type: ignore[index]
    )
    assert (tmp_path / "best_reward.py").read_text() == best.code
    assert (tmp_path / "round-2/candidate-1.py").read_text() == KEY
    assert "| 1 | 2 | syntax |" in (tmp_path / "report.md").read_text()


def test_candidate_that_fails_during_training_is_fed_back_and_the_loop_goes_on(
    tmp_path: Path,
) -> None:
    # 64 trial transitions pass; a training batch holds 4 x 128 = 512
    late = (
        "```python\nimport numpy as np\n\ndef compute_reward(obs, act, next_obs, terminated, "
        "truncated):\n    if len(obs) > 100:\n        raise ValueError('too many')\n"
        "    return np.zeros(len(obs))\n```"
    )
    config = Text2RewardConfig(rounds=2, candidates=1, timeout=3.0, trial_transitions=64)
    with (
        running(make_scripted_chat_app([late, f"```python\n{CONSTANT}```"])) as base,
        JudgeClient(f"{base}/v1", "scripted", cache=None, retries=0) as client,
    ):
        candidates = run_text2reward(RunRecipe.from_dict(RECIPE), client, config, tmp_path)
    assert [c.stage for c in candidates] == ["training", "trained"]
    assert "ValueError: too many" in (candidates[0].problem or "")
    conversation = [json.loads(line) for line in (tmp_path / "conversation.jsonl").open()]
    feedback = conversation[1]["messages"][-1][1]
    assert "Candidate 1: rejected at the training check" in feedback
    assert "No candidate could be trained yet" in feedback


def test_a_server_that_fails_in_round_2_leaves_round_1s_results(tmp_path: Path) -> None:
    from densereward.signals.http import HTTPReplyError

    config = Text2RewardConfig(rounds=2, candidates=1, timeout=3.0, trial_transitions=64)
    with (
        running(make_scripted_chat_app([f"```python\n{CONSTANT}```"])) as base,
        JudgeClient(f"{base}/v1", "scripted", cache=None, retries=0) as client,
        pytest.raises(HTTPReplyError, match="used up"),
    ):
        run_text2reward(RunRecipe.from_dict(RECIPE), client, config, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "candidates.jsonl").open()]
    assert [(r["round"], r.get("stage")) for r in records] == [(0, None), (1, "trained")]
    assert (tmp_path / "best_reward.py").read_text() == CONSTANT


def test_cli_runs_the_loop_and_names_a_bad_server_in_one_line(tmp_path: Path) -> None:
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(json.dumps(RECIPE))

    def loop(server: str, out: str) -> Any:
        arguments = ["text2reward", str(recipe_file), "--server", server, "--out", out]
        return CliRunner().invoke(app, [*arguments, "--rounds", "1", "--candidates", "1"])

    with running(make_scripted_chat_app([f"```python\n{CONSTANT}```"])) as base:
        result = loop(f"{base}/v1", str(tmp_path / "out"))
        assert result.exit_code == 0, result.output
        assert "round 1 candidate 1: final success" in result.output
        # the script is used up: the server's 503 is one line, exit 2
        again = loop(f"{base}/v1", str(tmp_path / "again"))
    assert again.exit_code == 2
    assert "used up" in again.output and "Traceback" not in again.output
    assert not (tmp_path / "again").exists()
    # a folder that holds something is never written into
    kept = tmp_path / "out" / "report.md"
    before = kept.read_text()
    refused = loop("http://127.0.0.1:9/v1", str(tmp_path / "out"))
    assert refused.exit_code == 2 and "not an empty folder" in refused.output
    assert kept.read_text() == before


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("rounds", 0, "--rounds"),
        ("candidates", 0, "--candidates"),
        ("env_weight", float("nan"), "--env-weight"),
        ("env_weight", -1.0, "--env-weight"),
        ("temperature", -1.0, "--temperature"),
        ("temperature", float("inf"), "--temperature"),
        ("timeout", 0.0, "--timeout"),
        ("timeout", float("nan"), "--timeout"),
    ],
)
def test_bad_loop_settings_are_refused_naming_the_flag(field: str, value: float, flag: str) -> None:
    from densereward.core.errors import ConfigError

    with pytest.raises(ConfigError, match=f"^{flag}: "):
        Text2RewardConfig(**{field: value})  # type: ignore[arg-type]
