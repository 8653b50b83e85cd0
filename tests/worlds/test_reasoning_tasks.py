"""The reasoning world's verifiers, corruptions, tokenizer and exporters."""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from densereward.models.language import encode_rows
from densereward.worlds.reasoning.export import (
    preference_records,
    processbench_records,
    stepwise_records,
)
from densereward.worlds.reasoning.rollouts import graded_batch, policy_prompt
from densereward.worlds.reasoning.tasks import (
    CORRUPTIONS,
    STEP_TAG,
    Difficulty,
    Problem,
    TaskSpec,
    corrupt,
    first_error,
    grade,
    parse_response,
    render_response,
    sample_problems,
    step_is_true,
)
from densereward.worlds.reasoning.tokenizer import build_tokenizer
from densereward.worlds.reasoning.world import demonstrations, exact_step_labels

ALL = TaskSpec(("arithmetic", "equation", "lists"), Difficulty(min_ops=1, max_ops=5))


def independent_answer(problem: Problem) -> str:
    """The answer computed without the task code: Python evaluates the prompt itself."""
    if problem.family == "arithmetic":
        return str(eval(problem.prompt))
    if problem.family == "lists":
        namespace = {
            "sort": lambda v: sorted(v),
            "rev": lambda v: v[::-1],
            **{
                f"add{k}": functools.partial(lambda k, v: [x + k for x in v], k)
                for k in range(1, 30)
            },
        }
        return "[" + ",".join(map(str, eval(problem.prompt, namespace))) + "]"
    left, right = problem.prompt.split("=")
    solutions = [x for x in range(-100, 200) if eval(left, {"x": x}) == int(right)]
    assert len(solutions) == 1
    return str(solutions[0])


def slow_first_difference(reference: tuple[str, ...], steps: tuple[str, ...]) -> int:
    for index in range(max(len(reference), len(steps))):
        if index >= len(reference) or index >= len(steps) or reference[index] != steps[index]:
            return index
    return -1


def test_verifier_hand_cases():
    problem = Problem("arithmetic", "((8+2)*3)-1", ("8+2=10", "10*3=30", "30-1=29"), "29")
    assert grade(problem, "8+2=10ки10*3=30ки30-1=29ки#29").first_error == -1
    assert grade(problem, "8+2=10ки10*3=30ки30-1=29ки#29").correct
    assert grade(problem, "8+2=10ки10*3=31ки31-1=30ки#30").first_error == 1
    assert not grade(problem, "8+2=10ки10*3=31ки31-1=30ки#30").correct
    # a repeated correct step is a true statement but not the right next step
    repeated = grade(problem, "8+2=10ки8+2=10ки10*3=30ки30-1=29ки#29")
    assert repeated.first_error == 1 and repeated.correct and repeated.labels == [1, 0, 0, 0]
    assert step_is_true(problem, "8+2=10") and not step_is_true(problem, "8+2=11")
    # a miracle: right answer, wrong step; and a response that stops early
    assert grade(problem, "8+2=10ки10*3=29ки#29").first_error == 1
    assert grade(problem, "8+2=10ки#10").first_error == 1
    assert grade(problem, "8+2=10ки10*3=30ки30-1=29ки").answer is None
    assert parse_response(" 1+2=3 ки 3*2=6 ки # 6") == (("1+2=3", "3*2=6"), "6")


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_canonical_solutions_are_exact(seed):
    for sample in sample_problems(ALL, 6, seed):
        problem = sample.problem
        assert independent_answer(problem) == problem.answer
        verdict = grade(problem, problem.response)
        assert verdict.first_error == -1 and verdict.correct
        assert all(step_is_true(problem, step) for step in problem.steps)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(CORRUPTIONS))
def test_corruption_labels_are_the_first_difference(seed, kind):
    rng = np.random.default_rng(seed)
    for sample in sample_problems(ALL, 4, seed):
        bad = corrupt(sample, kind, rng)
        assert bad.label == slow_first_difference(sample.problem.steps, bad.steps)
        assert bad.final_answer_correct == (bad.answer == independent_answer(sample.problem))
        if kind == "miracle":
            assert bad.final_answer_correct and bad.label >= 0
        elif kind == "arithmetic":
            assert bad.label >= 0 and not step_is_true(sample.problem, bad.steps[bad.label])


def test_difficulty_knobs_set_the_number_of_steps():
    for family in ("arithmetic", "equation", "lists"):
        spec = TaskSpec((family,), Difficulty(min_ops=3, max_ops=3, max_operand=20))
        counts = {len(s.problem.steps) for s in sample_problems(spec, 40, 0)}
        # an equation with a small constant cannot be split into as many parts
        assert counts == {3} if family != "equation" else max(counts) == 3


def test_tokenizer_round_trips_without_unknown_tokens():
    tokenizer = build_tokenizer()
    for sample in sample_problems(ALL, 50, 3):
        text = sample.problem.prompt + "=?" + sample.problem.response
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == text
        assert ids.count(tokenizer.convert_tokens_to_ids("ки")) == len(sample.problem.steps)


def test_processbench_export_labels_are_exact():
    samples = sample_problems(ALL, 200, 5)
    records = processbench_records(samples, seed=1)
    assert {"id", "generator", "problem", "steps", "final_answer_correct", "label"} <= set(
        records[0]
    )
    kinds = {r["label"] == -1 for r in records}
    assert kinds == {True, False}
    miracles = 0
    for sample, record in zip(samples, records, strict=False):
        steps = [re.sub(r"#.*$", "", s) for s in record["steps"]]
        # the verifier's earliest error; a solution a step short is charged to its last step
        assert record["label"] == min(first_error(sample.problem, steps), len(steps) - 1)
        answer = record["steps"][-1].rpartition("#")[2]
        assert record["final_answer_correct"] == (answer == sample.problem.answer)
        miracles += record["final_answer_correct"] and record["label"] >= 0
    assert miracles > 0


def test_stepwise_and_preference_exports():
    samples = sample_problems(ALL, 100, 7)
    for sample, record in zip(samples, stepwise_records(samples, seed=2), strict=False):
        labels = record["labels"]
        assert labels == sorted(labels, reverse=True)  # monotone: good, then bad
        cut = labels.count(True)
        error = first_error(sample.problem, record["completions"])
        assert min(error, len(labels) - 1) == (-1 if cut == len(labels) else cut)
    pairs = preference_records(samples, seed=3)
    assert len(pairs) > 80
    by_prompt = {s.problem.prompt: s.problem for s in samples}
    for pair in pairs:
        problem = by_prompt[pair["prompt"]]
        assert grade(problem, pair["chosen"]).correct
        assert not grade(problem, pair["rejected"]).correct


def test_unknown_family_is_rejected():
    with pytest.raises(KeyError, match="unknown task family 'algebra'"):
        TaskSpec(("algebra",))
    assert render_response(["1+1=2"], "2") == "1+1=2ки#2"


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), kinds=st.sets(st.sampled_from(CORRUPTIONS), min_size=1))
def test_noisy_demonstrations_are_canonical_or_carry_one_corruption(seed, kinds):
    data = sample_problems(ALL, 30, seed)
    assert demonstrations(data, 0.0, tuple(kinds), seed) == [s.problem.response for s in data]
    for sample, text in zip(data, demonstrations(data, 1.0, tuple(kinds), seed), strict=True):
        graded = grade(sample.problem, text)
        if kinds == {"arithmetic"}:  # a wrong result is always an error, at the first wrong step
            assert graded.first_error >= 0
        if graded.first_error >= 0:
            # everything before the first error is the canonical solution's
            assert graded.steps[: graded.first_error] == sample.problem.steps[: graded.first_error]


def test_noisy_demonstrations_corrupt_the_asked_fraction():
    data = sample_problems(ALL, 4000, 3)
    texts = demonstrations(data, 0.3, ("arithmetic",), 3)
    corrupted = np.mean(
        [grade(s.problem, t).first_error >= 0 for s, t in zip(data, texts, strict=True)]
    )
    assert abs(corrupted - 0.3) < 4 * np.sqrt(0.3 * 0.7 / len(data))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), pieces=st.lists(st.integers(0, 7), min_size=1, max_size=8))
def test_reward_model_labels_line_up_with_the_step_spans_rollouts_cut(seed, pieces):
    """The labels a reward model trains on (``exact_step_labels``) must be one per step span of
    the encoded response and equal the ``label`` column ``graded_batch`` gives the same text —
    also for malformed responses: a tag after the answer, empty steps, no answer, cut mid-step,
    a complete right last step with neither tag nor answer."""
    problem = sample_problems(TaskSpec(("arithmetic",), Difficulty(1, 3)), 1, seed)[0].problem
    canonical = list(problem.steps)

    def piece(kind: int, i: int) -> str:
        return [
            canonical[i % len(canonical)] + STEP_TAG,
            STEP_TAG,
            "#" + problem.answer,
            "#" + problem.answer + STEP_TAG,
            canonical[i % len(canonical)][:2],
            "1+1=3" + STEP_TAG,
            "#",
            canonical[i % len(canonical)],
        ][kind]

    response = "".join(piece(kind, i) for i, kind in enumerate(pieces))
    rows = encode_rows(build_tokenizer(), [policy_prompt(problem)], [response])
    batch = graded_batch(rows, build_tokenizer(), [problem], np.array([0]))
    assert batch.text["response"] == [response]
    [labels] = exact_step_labels([problem], [response])
    assert labels == batch.step("label").tolist()
    # from first principles: right steps, then wrong ones; the tail is right exactly when the
    # response is the canonical solution
    assert labels == sorted(labels, reverse=True)
    assert labels[-1] == float(response == problem.response)
