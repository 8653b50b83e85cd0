"""Policy rollouts on reasoning problems, graded exactly, as a ``Trajectories`` batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from densereward.core.trajectories import Trajectories
from densereward.models.language import (
    Rows,
    SampleCost,
    decode_responses,
    rows_to_trajectories,
    sample,
)
from densereward.worlds.reasoning.tasks import STEP_TAG, Problem, grade, span_labels, step_is_true

if TYPE_CHECKING:  # transformers costs a second to import; annotations only
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PROMPT_SUFFIX = "=?"


def policy_prompt(problem: Problem) -> str:
    """What the policy sees: the problem and ``=?``."""
    return problem.prompt + PROMPT_SUFFIX


def graded_batch(
    rows: Rows,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    group: np.ndarray,
) -> Trajectories:
    """Rows of responses to ``problems[group[i]]`` as trajectories: steps end at step tags;
    ``outcome`` (the reward) and ``verdict`` (the grader's judgement) 1.0 if the answer is right;
    step column ``label`` holds the exact process labels
    (``span_labels``: 1 before the first wrong step, 0 from it on; the span after the last tag is
    1 only if the whole response is right); step column ``step_true``: whether the step is a
    true statement at all (what a lenient judge checks, blind to repeated steps);
    ``first_error`` per trajectory; the reference answer as ``text["answer"]``."""
    texts = decode_responses(tokenizer, rows)
    grades = [grade(problems[g], t) for g, t in zip(group, texts, strict=True)]
    batch = rows_to_trajectories(
        rows,
        int(tokenizer.convert_tokens_to_ids(STEP_TAG)),  # type: ignore[arg-type]
        episodes={
            "outcome": torch.tensor([float(g.correct) for g in grades], dtype=torch.float64),
            "verdict": torch.tensor([float(g.correct) for g in grades], dtype=torch.float64),
            "group": torch.as_tensor(group, dtype=torch.long),
            "first_error": torch.tensor([g.first_error for g in grades]),
        },
        text={
            "prompt": [problems[g].prompt for g in group],
            "response": texts,
            "answer": [problems[g].answer for g in group],
        },
    )
    # ``step_true`` is a lenient judge's verdict: the step is a true statement, relevant or not.
    labels = np.zeros(batch.num_steps)
    true = np.zeros(batch.num_steps)
    lengths = batch.lengths.numpy()
    starts = batch.offsets[:-1].numpy()
    for i, g in enumerate(grades):  # grading is per string; this only lays its labels out
        labels[starts[i] : starts[i] + lengths[i]] = span_labels(g, texts[i], lengths[i])
        problem = problems[group[i]]
        verdicts = [float(step_is_true(problem, s)) for s in g.steps[: lengths[i]]]
        true[starts[i] : starts[i] + len(verdicts)] = verdicts
    return batch.with_steps(label=torch.from_numpy(labels), step_true=torch.from_numpy(true))


def rollout(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    n: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Trajectories, Rows, SampleCost]:
    """``n`` responses per problem (one group each), graded."""
    rows, cost = sample(
        policy,
        tokenizer,
        [policy_prompt(p) for p in problems],
        n=n,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        generator=generator,
    )
    group = np.repeat(np.arange(len(problems)), n)
    return graded_batch(rows, tokenizer, problems, group), rows, cost
