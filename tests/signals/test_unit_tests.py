from __future__ import annotations

import json

import pytest
import torch

from densereward import ConfigError, ValidationError
from densereward.core.components import SignalContext
from densereward.core.registry import build
from densereward.core.trajectories import Trajectories
from densereward.sandbox import Sandbox
from densereward.signals.unit_tests import (
    UnitTestSignal,
    extract_program,
    weighted_partial_credit,
)

TESTS = json.dumps([{"args": [x], "expected": 2 * x + 3} for x in range(4)])


def batch(responses: list[str], groups: list[int] | None = None, tests: str = TESTS):
    n = len(responses)
    return Trajectories.from_episodes(
        {"reward": [[0.0, 0.0]] * n},
        {"group": groups or [0] * n},
        text={"response": responses, "tests": [tests] * n},
    )


def reference_scores(passed: list[list[int]], groups: list[int], alpha: float, bonus: float):
    """Slow and obvious VeRPO partial credit: loop over groups, tests and responses."""
    scores = []
    for i, row in enumerate(passed):
        members = [j for j, g in enumerate(groups) if g == groups[i]]
        weights = []
        for k in range(len(row)):
            rate = (sum(passed[j][k] for j in members) + alpha) / (len(members) + 2 * alpha)
            weights.append(1 - rate)
        total = sum(weights)
        score = sum(w * p for w, p in zip(weights, row, strict=True)) / total if total else 1.0
        scores.append(score + bonus * all(row))
    return scores


def test_weighted_partial_credit_matches_hand_computation() -> None:
    # tests passed by 2, 1, 0 of 3 responses; α = 1, n = 3: w = 1 - (c+1)/5 = (0.4, 0.6, 0.8)
    passed = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    scores = weighted_partial_credit(passed, torch.ones(3, 3), torch.tensor([0, 0, 0]))
    assert scores.tolist() == pytest.approx([(0.4 + 0.6) / 1.8, 0.4 / 1.8, 0.0])
    uniform = weighted_partial_credit(passed, torch.ones(3, 3), torch.zeros(3).long(), "uniform")
    assert uniform.tolist() == pytest.approx([2 / 3, 1 / 3, 0.0])
    binary = weighted_partial_credit(passed, torch.ones(3, 3), torch.zeros(3).long(), "binary")
    assert binary.tolist() == [0.0, 0.0, 0.0]


def test_weighted_partial_credit_matches_slow_reference_over_groups() -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        passed = (torch.rand(9, 5, generator=generator) < 0.5).double()
        groups = torch.randint(0, 3, (9,), generator=generator)
        groups = torch.unique(groups, return_inverse=True)[1]
        for alpha, bonus in ((1.0, 0.0), (0.5, 1.0), (0.0, 0.0)):
            got = weighted_partial_credit(
                passed, torch.ones(9, 5), groups, "weighted", alpha, bonus
            )
            want = reference_scores(passed.int().tolist(), groups.tolist(), alpha, bonus)
            assert got.tolist() == pytest.approx(want)


def test_rarely_passed_tests_weigh_more() -> None:
    # both responses pass one test of two; the one passing the test nobody else passes wins
    passed = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    scores = weighted_partial_credit(passed, torch.ones(4, 2), torch.zeros(4).long())
    assert scores[1] == 1.0 and scores[0] < 0.5 * scores[1]


def test_extract_program_from_answer_and_code_block() -> None:
    assert extract_program("1-1=0ки#x*2", "answer", "return {program}") == "return x*2"
    assert extract_program("no mark", "answer", "{program}") is None
    text = "prose\n```python\ndef f(x):\n    return 1\n```\nmore"
    assert extract_program(text, "code_block", "{program}") == "def f(x):\n    return 1\n"


def test_signal_scores_programs_in_the_sandbox_with_reasons() -> None:
    responses = [
        "def f(x):\n    return 2*x+3",  # passes all 4
        "def f(x):\n    return 3*x+3",  # passes x=0 only
        "def f(x):\n    return 1/(x-1)*0+2*x+3",  # crashes on x=1, passes the other 3
        "def g(x):\n    return 0",  # no f
    ]
    signal = UnitTestSignal(test_timeout=0.5).bind(SignalContext())
    out = signal(batch(responses), "tests_reward")
    # pass counts per test: x=0: 3, x=1: 1, x=2: 2, x=3: 2 of 4; w = 1 - (c+1)/6
    w = [1 - 4 / 6, 1 - 2 / 6, 1 - 3 / 6, 1 - 3 / 6]
    expected = [1.0, w[0] / sum(w), (w[0] + w[2] + w[3]) / sum(w), 0.0]
    last = out.step("tests_reward")[out.segments.last]
    assert last.tolist() == pytest.approx(expected)
    assert out.step("tests_reward")[0] == 0.0  # only the last step carries the score
    assert out.episode("tests_reward_passed").tolist() == [1.0, 0.25, 0.75, 0.0]
    assert out.episode("tests_reward_all").tolist() == [1.0, 0.0, 0.0, 0.0]
    failures = [json.loads(text) for text in out.text["tests_reward_failures"]]
    assert failures[0] == []
    assert failures[1][0] == {"test": 1, "reason": "returned 6, expected 5"}
    assert failures[2] == [{"test": 1, "reason": "ZeroDivisionError: division by zero"}]
    assert len(failures[3]) == 4 and "no function 'f'" in failures[3][0]["reason"]


def test_hostile_programs_fail_with_their_reason_and_others_still_score() -> None:
    responses = [
        "def f(x):\n    while True:\n        pass",  # hangs: every test times out
        "def f(x):\n    return 2*x+3 if x < 2 else f(x)",  # infinite recursion past x=1
        "import os\nos._exit(0)",  # kills its own process before replying
        "raise SystemExit(3)",  # exits while loading
        "def f(x):\n    return {1, 2}",  # not JSON
        "def f(x):\n    return 2*x+3",
    ]
    signal = UnitTestSignal(test_timeout=0.3).bind(SignalContext())
    out = signal(batch(responses), "r")
    failures = [json.loads(text) for text in out.text["r_failures"]]
    assert [f["reason"] for f in failures[0]] == ["timed out after 0.3 s"] * 4
    assert [f["test"] for f in failures[1]] == [2, 3]
    assert failures[1][0]["reason"].startswith("RecursionError")
    assert all("no reply" in f["reason"] for f in failures[2]) and len(failures[2]) == 4
    assert "SystemExit" in failures[3][0]["reason"]
    assert failures[4][0]["reason"].startswith("TypeError")
    assert out.episode("r_passed").tolist() == [0.0, 0.5, 0.0, 0.0, 0.0, 1.0]


def test_a_program_that_takes_the_process_down_fails_every_test_by_the_limit() -> None:
    # catches the per-test alarm and keeps spinning: only the sandbox's limit stops it
    hog = "def spin():\n    while True:\n        pass\n\n\ndef f(x):\n    while True:\n"
    hog += "        try:\n            spin()\n        except BaseException:\n            pass\n"
    signal = UnitTestSignal(test_timeout=0.2).bind(SignalContext())
    out = signal(batch([hog, "def f(x):\n    return 2*x+3"]), "r")
    failures = json.loads(out.text["r_failures"][0])
    assert len(failures) == 4 and "limit" in failures[0]["reason"]
    assert out.episode("r_passed").tolist() == [0.0, 1.0]


def test_tests_from_the_reference_answer_and_identical_programs_run_once(monkeypatch) -> None:
    spec = build(
        "signal",
        {
            "kind": "unit_tests",
            "extract": "answer",
            "template": "def f(x):\n    return {program}\n",
            "inputs": "[[0], [1], [5]]",
            "credit": "binary",
        },
    )
    runner = spec.bind(SignalContext())
    responses = ["7-5=2ки#x*2+3", "#2*x+3", "#x*2+3", "#x+3", "no answer"]
    data = Trajectories.from_episodes(
        {"reward": [[0.0]] * 5},
        {"group": [0] * 5},
        text={"response": responses, "answer": ["x*2+3"] * 5},
    )
    calls = []
    real = Sandbox.map

    def counting(self, programs, concurrency=None):
        programs = list(programs)
        calls.append(len(programs))
        return real(self, programs, concurrency)

    monkeypatch.setattr(Sandbox, "map", counting)
    out = runner(data, "r")
    assert out.step("r").tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert calls == [1, 3]  # the reference once; "x*2+3" twice in the batch but run once
    assert json.loads(out.text["r_failures"][4])[0]["reason"] == "no program in the response"


def test_bad_configuration_and_bad_tests_are_refused() -> None:
    with pytest.raises(ConfigError, match="template"):
        UnitTestSignal(template="def f(x): pass")
    with pytest.raises(ConfigError, match="inputs"):
        UnitTestSignal(inputs="[1, 2]")
    runner = UnitTestSignal().bind(SignalContext())
    with pytest.raises(ValidationError, match="not JSON"):
        runner(batch(["def f(x): return x"], tests="[{"), "r")
    data = Trajectories.from_episodes({"reward": [[0.0]]}, text={"response": ["x"]})
    with pytest.raises(ValidationError, match="no tests column"):
        runner(data, "r")


# ----------------------------------------------------------------- reward files (bad input)
def reward_file(tmp_path, body: str) -> str:
    path = tmp_path / "reward.py"
    path.write_text("import numpy as np\n\n" + body)
    return str(path)


def reward_recipe(function: str):
    from densereward import Recipe

    return Recipe.from_dict(
        {
            "signals": {"h": {"kind": "reward_function", "function": function}},
            "estimator": {"kind": "gae"},
        }
    )


def transitions_batch() -> Trajectories:
    import numpy as np

    return Trajectories.from_episodes(
        {"obs": [np.array([[1.0], [2.0]])], "action": [[0, 0]]}, {"final_obs": np.array([[0.0]])}
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("def other(obs, act, next_obs, terminated, truncated):\n    return obs[:, 0]\n",
         "reward.py: defines no 'reward'"),
        ("def reward(obs, act):\n    return obs[:, 0]\n",
         r"reward.py: reward\(obs, act\) cannot be called as reward\(obs, act, next_obs"),
        ("reward = 3\n", "is not a callable"),
        ("raise RuntimeError('boom')\n", "reward.py: importing it failed: RuntimeError: boom"),
    ],
)  # fmt: skip
def test_a_bad_reward_file_fails_in_one_line_when_the_recipe_loads(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message) as caught:
        reward_recipe(reward_file(tmp_path, body) + ":reward")
    assert "\n" not in str(caught.value) and str(tmp_path) in str(caught.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("def reward(obs, act, next_obs, terminated, truncated):\n    return np.zeros(3)\n",
         r"returned shape \[3\], expected \[2\]"),
        ("def reward(obs, act, next_obs, terminated, truncated):\n"
         "    return np.array([0.0, np.nan])\n",
         r"trajectory 0, step 1: field 'h': signals\.h reward_function produced a "
         r"non-finite value \(nan\) in .*reward\.py:reward"),
        ("def reward(obs, act, next_obs, terminated, truncated):\n    return obs[:, 7]\n",
         "raised IndexError"),
    ],
)  # fmt: skip
def test_a_reward_that_returns_bad_values_fails_on_the_first_batch(tmp_path, body, message):
    from densereward.pipeline import Pipeline

    path = reward_file(tmp_path, body)
    with pytest.raises(ValidationError, match=message) as caught:
        Pipeline(reward_recipe(path + ":reward")).transform(transitions_batch())
    assert "reward.py" in str(caught.value) and "\n" not in str(caught.value)
