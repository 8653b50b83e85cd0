"""The exact verifiers: the earliest wrong step, the outcome, and the labels that follow.

Exact process labels follow Math-Shepherd's convention: every step before the first error is
good, the first error and everything after it bad.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from densereward.worlds.reasoning.tasks.family import Problem, family, normalize
from densereward.worlds.reasoning.tasks.format import STEP_TAG, parse_response, tag_aligned


@dataclass(frozen=True)
class Grade:
    """What the verifiers say about one response.

    ``first_error``: index of the earliest step that is not the right next step (-1 if none;
    a response with fewer or more steps than needed errs at the first missing or extra one);
    ``correct``: the final answer is right; ``labels``: 1 before ``first_error``, 0 from it on.
    """

    steps: tuple[str, ...]
    answer: str | None
    first_error: int
    correct: bool

    @property
    def labels(self) -> list[int]:
        cut = len(self.steps) if self.first_error < 0 else self.first_error
        return [1] * cut + [0] * (len(self.steps) - cut)


def first_error(problem: Problem, steps: Sequence[str]) -> int:
    """Index of the earliest step that differs from the right next step (-1 if none).

    >>> p = Problem("arithmetic", "(1+2)*2", ("1+2=3", "3*2=6"), "6")
    >>> first_error(p, ["1+2=3", "3*2=7"]), first_error(p, ["1+2=3"]), first_error(p, p.steps)
    (1, 1, -1)
    """
    for index, step in enumerate(steps):
        if index >= len(problem.steps) or normalize(step) != normalize(problem.steps[index]):
            return index
    return -1 if len(steps) == len(problem.steps) else len(steps)


def grade(problem: Problem, response: str) -> Grade:
    """The exact step and outcome verdict on a response."""
    steps, answer = parse_response(response)
    correct = answer is not None and normalize(answer) == normalize(problem.answer)
    return Grade(steps, answer, first_error(problem, steps), correct)


def span_labels(verdict: Grade, response: str, spans: int) -> list[float]:
    """Exact labels for the first ``spans`` step spans of ``response`` as
    ``models.language.response_step_spans`` cuts it: each tagged span gets its step's label
    (``tag_aligned``), and the span after the last tag (answer, EOS) is right only if the whole
    response is: the answer right and no wrong step. So a response that stops after a right step
    without answering ends on a 0 — it stopped short.

    >>> p = Problem("arithmetic", "(1+2)*2", ("1+2=3", "3*2=6"), "6")
    >>> span_labels(grade(p, "1+2=3ки3*2=6ки#6"), "1+2=3ки3*2=6ки#6", 3)
    [1.0, 1.0, 1.0]
    >>> span_labels(grade(p, "1+2=3ки3*2=6"), "1+2=3ки3*2=6", 2)
    [1.0, 0.0]
    """
    tags = response.count(STEP_TAG)
    tagged = tag_aligned(response, [float(v) for v in verdict.labels])
    whole = float(verdict.correct and verdict.first_error == -1)
    return tagged[:spans] + [whole] * (spans - tags)


def step_is_true(problem: Problem, step: str) -> bool:
    """Whether ``step`` is a true statement on its own (not whether it is the right next step).

    This is what a lenient step judge checks; it is blind to repeated or irrelevant steps.
    """
    return family(problem.family).is_true(problem, step)
