"""Monte-Carlo labels and OmegaPRM's binary search."""

from __future__ import annotations

import functools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from densereward.labeling.mc import (
    Prover,
    binary_search_first_zero,
    labels_from_first_error,
    monte_carlo_labels,
    omega_first_errors,
)
from densereward.models.language import decode_responses, sample, supervised_fine_tune
from densereward.worlds.reasoning.rollouts import policy_prompt
from densereward.worlds.reasoning.tasks import STEP_TAG, grade
from tests.reasoning_fixtures import model, problems, tokenizer


@st.composite
def monotone_values(draw):
    """Per solution: positive values up to a first zero, zeros after it."""
    rows = []
    for _ in range(draw(st.integers(1, 8))):
        length = draw(st.integers(1, 12))
        first = draw(st.integers(0, length))  # == length: no error
        positives = draw(st.lists(st.floats(0.01, 1.0), min_size=first, max_size=first))
        rows.append(positives + [0.0] * (length - first))
    return rows


@settings(max_examples=200, deadline=None)
@given(monotone_values())
def test_binary_search_finds_the_linear_scan_answer_with_log_probes(values):
    calls = []

    def probe(solutions, steps):
        calls.append(len(solutions))
        return np.array([values[s][k] for s, k in zip(solutions, steps, strict=True)])

    found, probes = binary_search_first_zero(probe, [len(v) for v in values])
    linear = [next((k for k, v in enumerate(row) if v == 0), -1) for row in values]
    assert found.tolist() == linear
    assert probes == sum(calls)
    bound = sum(int(np.ceil(np.log2(len(v) + 1))) for v in values)
    assert probes <= bound
    labels = labels_from_first_error(found, [len(v) for v in values])
    assert labels == [[float(v > 0) for v in row] for row in values]


@functools.cache
def greedy_memoriser():
    """A greedy prover that has memorised 8 problems (it finishes their correct prefixes
    correctly), with the problems' solutions and copies whose first step is wrong."""
    tok = tokenizer()
    lm = model().__class__(model().config)
    lm.load_state_dict(model().state_dict())
    targets = problems(8, 12)
    supervised_fine_tune(
        lm,
        tok,
        [policy_prompt(p) for p in targets] * 8,
        [p.response for p in targets] * 8,
        epochs=30,
        batch_size=16,
        learning_rate=1e-2,
    )
    prompts = [policy_prompt(p) for p in targets]
    judge = lambda i, text: grade(targets[i], text).correct  # noqa: E731
    prover = Prover(lm, tok, prompts, judge, 40, temperature=0.0)
    solutions = [list(p.steps) for p in targets]
    wrong = [[s[0] + "1", *s[1:]] for s in solutions]
    return prover, list(range(8)) * 2, solutions + wrong


def test_monte_carlo_labels_equal_completing_each_prefix_alone():
    """With a greedy prover every completion of a prefix is the same, so the soft label must be
    exactly 1[the greedy completion of that prefix, decoded alone, is correct]."""
    prover, owners, solutions = greedy_memoriser()
    lm, tok, prompts, judge = prover.model, prover.tokenizer, prover.prompts, prover.judge
    labels = monte_carlo_labels(prover, owners, solutions, STEP_TAG, n=3, seed=0)
    for owner, steps, soft, start in zip(owners, solutions, labels.soft, labels.start, strict=True):
        prefixes = ["", *("".join(s + STEP_TAG for s in steps[: k + 1]) for k in range(len(steps)))]
        expected = []
        for prefix in prefixes:
            rows, _ = sample(lm, tok, [prompts[owner] + prefix], 1, 40, temperature=0.0)
            expected.append(float(judge(owner, prefix + decode_responses(tok, rows)[0])))
        assert [start, *soft] == expected
    assert labels.hard == [[float(v > 0) for v in row] for row in labels.soft]
    assert sum(v for row in labels.soft[:8] for v in row) > 0  # the memoriser does succeed
    assert labels.generated_tokens > 0


def test_omega_search_finds_the_first_zero_of_the_monte_carlo_values_with_fewer_tokens():
    """On a real (greedy, so deterministic) prover, OmegaPRM's binary search must land where a
    linear scan of the per-prefix MC values finds the first zero, wherever those values are
    monotone (the search's premise), and must generate fewer tokens than labelling every prefix."""
    prover, owners, solutions = greedy_memoriser()
    labels = monte_carlo_labels(prover, owners, solutions, STEP_TAG, n=1, seed=0)
    found, tokens = omega_first_errors(prover, owners, solutions, STEP_TAG, n=1, seed=0)
    linear = [next((k for k, v in enumerate(row) if v == 0), -1) for row in labels.soft]
    monotone = [
        all(v > 0 for v in row[:k]) and all(v == 0 for v in row[k:]) if k >= 0 else True
        for row, k in zip(labels.soft, linear, strict=True)
    ]
    assert sum(monotone) >= 8
    assert {-1, 0} <= set(np.array(linear)[monotone].tolist())  # both outcomes are exercised
    assert [f for f, m in zip(found.tolist(), monotone, strict=True) if m] == [
        k for k, m in zip(linear, monotone, strict=True) if m
    ]
    assert 0 < tokens < labels.generated_tokens
