"""Datasets from the reasoning world, in the formats other tools read.

- TRL stepwise supervision (``trl.PRMTrainer``): ``prompt``, ``completions`` (steps), ``labels``.
- ProcessBench: ``id``, ``generator``, ``problem``, ``steps``, ``final_answer_correct``,
  ``label`` (index of the earliest wrong step, -1 if none; ``charged_step``), made by corrupting
  canonical solutions; the label is the exact verifier's, and "miracle" steps (a right final answer reached
  through a wrong step) are labelled at that step with ``final_answer_correct`` true.
- Preference pairs (TRL DPO/reward trainers): ``prompt``, ``chosen``, ``rejected``.

Every exporter is deterministic in its seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from densereward.worlds.reasoning.tasks import (
    CORRUPTIONS,
    Problem,
    Sample,
    corrupt,
    first_error,
    render_response,
)


def charged_step(problem: Problem, steps: Sequence[str]) -> int:
    """The exact earliest wrong step (-1: none), except that a solution which stops a step short
    — every step right, one missing at the end (a corruption that happens to land on the right
    step can do that) — is charged to its last step, the one that states its result as final:
    both formats label only the steps a solution has.

    >>> p = Problem("arithmetic", "(1+2)*2", ("1+2=3", "3*2=6"), "6")
    >>> charged_step(p, ["1+2=3"]), charged_step(p, ["1+2=4", "4*2=8"]), charged_step(p, p.steps)
    (0, 0, -1)
    """
    return min(first_error(problem, steps), len(steps) - 1)


def processbench_records(
    samples: Sequence[Sample],
    seed: int = 0,
    error_fraction: float = 0.5,
    kinds: Sequence[str] = CORRUPTIONS,
    generator: str = "densereward-corruption",
) -> list[dict[str, Any]]:
    """One ProcessBench item per sample: a corrupted solution with probability ``error_fraction``
    (corruption kind uniform over ``kinds``), else the canonical one."""
    rng = np.random.default_rng(seed)
    records = []
    for index, sample in enumerate(samples):
        problem = sample.problem
        steps, label, correct = list(problem.steps), -1, True
        if rng.random() < error_fraction:
            corrupted = corrupt(sample, str(rng.choice(list(kinds))), rng)
            steps = list(corrupted.steps)
            label = charged_step(problem, steps)
            correct = corrupted.final_answer_correct
            # the answer sits in the last step, as ProcessBench's solutions write it
            steps[-1] = steps[-1] + "#" + corrupted.answer
        else:
            steps[-1] = steps[-1] + "#" + problem.answer
        records.append(
            {
                "id": f"{problem.family}-{index}",
                "generator": generator,
                "problem": problem.prompt,
                "steps": steps,
                "final_answer_correct": bool(correct),
                "label": int(label),
            }
        )
    return records


def stepwise_records(
    samples: Sequence[Sample], seed: int = 0, error_fraction: float = 0.5
) -> list[dict[str, Any]]:
    """TRL stepwise supervision with exact labels: true before the first error, false after."""
    rng = np.random.default_rng(seed)
    records = []
    for sample in samples:
        steps = list(sample.problem.steps)
        if rng.random() < error_fraction:
            steps = list(corrupt(sample, str(rng.choice(list(CORRUPTIONS))), rng).steps)
        error = charged_step(sample.problem, steps)
        cut = len(steps) if error < 0 else error
        labels = [True] * cut + [False] * (len(steps) - cut)
        records.append({"prompt": sample.problem.prompt, "completions": steps, "labels": labels})
    return records


def preference_records(samples: Sequence[Sample], seed: int = 0) -> list[dict[str, Any]]:
    """Pairs of the canonical response (chosen) and a corrupted one with a wrong answer."""
    rng = np.random.default_rng(seed)
    records = []
    for sample in samples:
        problem = sample.problem
        for _ in range(8):  # miracles and lucky corruptions keep the right answer: redraw
            bad = corrupt(sample, str(rng.choice(["arithmetic", "operand", "skip"])), rng)
            if not bad.final_answer_correct:
                break
        else:
            continue
        records.append(
            {
                "prompt": problem.prompt,
                "chosen": problem.response,
                "rejected": render_response(bad.steps, bad.answer),
            }
        )
    return records


EXPORT_FORMATS = ("stepwise", "processbench", "preference")
"""What ``export_records`` (and ``densereward tasks``) can write."""


def export_records(
    format: str, samples: Sequence[Sample], seed: int = 0, error_fraction: float = 0.5
) -> list[dict[str, Any]]:
    """``samples`` as records of one of ``EXPORT_FORMATS``; ``error_fraction`` (the share of
    corrupted solutions) applies to ``stepwise`` and ``processbench``: a preference pair always
    has one corrupted side."""
    if format == "stepwise":
        return stepwise_records(samples, seed, error_fraction)
    if format == "processbench":
        return processbench_records(samples, seed, error_fraction)
    if format == "preference":
        return preference_records(samples, seed)
    raise ValueError(f"unknown format {format!r}; known: {', '.join(EXPORT_FORMATS)}")
