from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from densereward.core.components import SignalContext
from densereward.core.trajectories import Trajectories
from densereward.signals.tool_calls import ToolCallSignal, parse_calls
from densereward.signals.unit_tests import UnitTestSignal
from densereward.worlds.reasoning.tasks import (
    TEXT_FORMAT,
    Difficulty,
    TaskSpec,
    family,
    grade,
    sample_problems,
    step_is_true,
)
from densereward.worlds.reasoning.tasks.programs import (
    PROGRAM_TEMPLATE,
    is_restricted,
    program_tests,
)
from densereward.worlds.reasoning.tasks.tool_calls import TOOLS
from densereward.worlds.reasoning.tokenizer import build_tokenizer

# the base vocabulary as it was before the code families existed, id by id
BASE_VOCABULARY = [
    "<pad>", "<unk>", "<bos>", "<eos>", ",", "1", "=", "ки", "2", "(", ")", "[", "]", "3", "4",
    "6", "8", "5", "7", "*", "9", "0", "+", "x", "-", "#", "?", "add", "rev", "sort", " ", "/",
]  # fmt: skip


def problems(name: str, n: int = 40, seed: int = 0):
    return [s.problem for s in sample_problems(TaskSpec((name,), Difficulty(1, 3, 9)), n, seed)]


def test_the_base_tokenizer_is_unchanged_and_extensions_only_append() -> None:
    base = build_tokenizer()
    vocabulary = sorted(base.get_vocab().items(), key=lambda item: item[1])
    assert [word for word, _ in vocabulary] == BASE_VOCABULARY
    assert build_tokenizer(families=("arithmetic", "lists")).get_vocab() == base.get_vocab()
    extended = build_tokenizer(families=("tool_calls", "programs"))
    assert {w: i for w, i in extended.get_vocab().items() if w in base.get_vocab()} == dict(
        vocabulary
    )
    assert sorted(extended.get_vocab().values()) == list(range(len(BASE_VOCABULARY) + 6))
    text = "(1+2)*2=?1+2=3ки3*2=6ки#6sort([3,1])=[1,3]ки#x"
    assert extended(text)["input_ids"] == base(text)["input_ids"]


@pytest.mark.parametrize("name", ["tool_calls", "programs"])
def test_code_families_speak_the_extended_vocabulary(name) -> None:
    tokenizer = build_tokenizer(families=(name,))
    for problem in problems(name):
        text = problem.prompt + "=?" + problem.response
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == text


@pytest.mark.parametrize("name", ["tool_calls", "programs"])
def test_canonical_solutions_are_right_step_by_step(name) -> None:
    for problem in problems(name):
        verdict = grade(problem, problem.response)
        assert verdict.correct and verdict.first_error == -1
        assert all(step_is_true(problem, step) for step in problem.steps)
    assert problems(name, 10, 3) == problems(name, 10, 3)  # reproducible from the seed


def test_tool_call_answers_are_schema_calls_whose_steps_compute() -> None:
    for problem in problems("tool_calls"):
        ((tool, arguments),) = parse_calls(problem.answer, TOOLS)
        assert tool in TOOLS and tuple(arguments) == TOOLS[tool]
        # steps chain: each intermediate result is the next call's first argument
        for step, following in zip(
            problem.steps, [*problem.steps, problem.answer][1:], strict=True
        ):
            result = int(step.rpartition("=")[2])
            call = following[: following.rindex(")") + 1]
            assert parse_calls(call, TOOLS)[0][1]["a"] == result
    wrong = problems("tool_calls", 1)[0]
    assert not step_is_true(wrong, "add(a=3,k=4)=7")  # add's second parameter is b
    assert not step_is_true(wrong, "add(a=3,b=4)=8")
    assert step_is_true(wrong, "mul(a=3,k=4)=12")


def test_tool_call_family_answers_earn_the_full_toolrl_reward() -> None:
    sample = problems("tool_calls", 12)
    batch = Trajectories.from_episodes(
        {"reward": [[0.0] * (len(p.steps) + 1) for p in sample]},
        text={"response": [p.response for p in sample], "answer": [p.answer for p in sample]},
    )
    out = ToolCallSignal(schema=dict(TOOLS))(batch, "tool")
    assert out.step("tool")[out.segments.last].tolist() == [4.0] * 12


def test_program_answers_are_restricted_python_that_passes_its_tests() -> None:
    sample = problems("programs", 12)
    assert all(is_restricted(p.answer) for p in sample)
    assert not is_restricted("open('x')") and not is_restricted("x.real")
    # the canonical program, an equivalent one and a wrong one, against the family's tests
    responses, tests = [], []
    for p in sample[:4]:
        a, b = (int(v) for v in p.answer[2:].split("+"))
        responses += [p.response, f"#{b}+{a}*x", f"#x*{a + 1}+{b}"]
        tests += [program_tests(p)] * 3
    batch = Trajectories.from_episodes(
        {"reward": [[0.0]] * len(responses)},
        {"group": np.repeat(np.arange(4), 3)},
        text={"response": responses, "tests": tests},
    )
    signal = UnitTestSignal(extract="answer", template=PROGRAM_TEMPLATE, credit="uniform")
    out = signal.bind(SignalContext(text_format=TEXT_FORMAT))(batch, "tests")
    passed = out.episode("tests_passed").view(4, 3)
    assert torch.equal(passed[:, :2], torch.ones(4, 2))
    # x*(a+1)+b agrees with a*x+b only at x = 0: one test of eight
    assert torch.equal(passed[:, 2], torch.full((4,), 1 / 8, dtype=torch.float64))
    assert json.loads(program_tests(sample[0]))[1]["args"] == [1]


def test_program_prompts_show_two_of_the_tests() -> None:
    for p in problems("programs", 10):
        cases = {c["args"][0]: c["expected"] for c in json.loads(program_tests(p))}
        assert p.prompt == f"f(1)={cases[1]},f(2)={cases[2]}"
    assert family("programs").name == "programs"
