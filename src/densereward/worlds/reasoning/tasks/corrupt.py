"""Controlled corruptions of a canonical solution, with the exact earliest error of each."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from densereward.worlds.reasoning.tasks.family import family
from densereward.worlds.reasoning.tasks.sampling import Sample
from densereward.worlds.reasoning.tasks.verify import first_error

CORRUPTIONS = ("arithmetic", "operand", "skip", "miracle")


@dataclass(frozen=True)
class Corrupted:
    """A corrupted solution: its steps, answer, the exact earliest error (-1: none) and the kind."""

    steps: tuple[str, ...]
    answer: str
    label: int
    kind: str
    final_answer_correct: bool


def corrupt(sample: Sample, kind: str, rng: np.random.Generator) -> Corrupted:
    """Corrupt one step of the canonical solution, then continue consistently from the error.

    - ``arithmetic``: the step's result is wrong (its operation is the right one);
    - ``operand``: the step applies its operation with a wrong operand, computed correctly;
    - ``skip``: the step applies the *next* operation, skipping one;
    - ``miracle``: the step jumps to the correct final answer with no valid derivation and the
      solution stops there — the final answer is right, the process is not (``Family.miracle``).

    Later steps recompute from the wrong state, so the answer is wrong (except for miracles).
    The label is exactly the corrupted step's index (checked with ``first_error``).
    """
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; known: {', '.join(CORRUPTIONS)}")
    problem = sample.problem
    fam = family(problem.family)
    ops = list(sample.ops)
    n = len(ops)
    if kind == "skip" and n < 2:
        kind = "arithmetic"
    at = int(rng.integers(0, n - 1 if kind == "skip" else n))
    if kind == "operand" and not fam.has_operand(ops[at]):  # no operand to get wrong
        kind = "arithmetic"
    _, states = fam.solve(sample.start, ops)
    steps = list(problem.steps[:at])
    state = states[at]
    if kind == "miracle":
        new_steps, answer = (
            tuple(fam.miracle(steps, state, ops[at], states[-1], rng)),
            problem.answer,
        )
    else:
        if kind == "arithmetic":
            new = fam.apply(state, ops[at])
            wrong = fam.perturb(new, rng)
            steps.append(fam.render_step(state, ops[at], wrong))
            rest = ops[at + 1 :]
        elif kind == "operand":
            op = ops[at]
            wrong_op = (op[0], op[1] + int(rng.choice([1, 2, -1])) or op[1] + 3)
            if wrong_op[1] <= 0 or wrong_op == op:
                wrong_op = (op[0], op[1] + 1)
            wrong = fam.apply(state, wrong_op)
            steps.append(fam.render_step(state, wrong_op, wrong))
            rest = ops[at + 1 :]
        else:  # skip
            wrong = fam.apply(state, ops[at + 1])
            steps.append(fam.render_step(state, ops[at + 1], wrong))
            rest = ops[at + 2 :]
        for op in rest:
            new = fam.apply(wrong, op)
            steps.append(fam.render_step(wrong, op, new))
            wrong = new
        new_steps, answer = tuple(steps), fam.render_state(wrong)
    # A corruption can land on the right step by chance (sorting an already sorted list): the
    # label is always the verifier's, never the intention.
    label = first_error(problem, new_steps)
    return Corrupted(new_steps, answer, label, kind, answer == problem.answer)
