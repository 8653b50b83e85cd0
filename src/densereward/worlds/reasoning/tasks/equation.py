"""``3*x+4=19`` solved as ``3*x=15``, ``x=5``; answer ``5``.

A state ``(a, b, c)`` means ``a*x+b=c``; operations subtract from both sides, then divide by ``a``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import numpy as np

from densereward.worlds.reasoning.tasks.family import (
    FAMILIES,
    Difficulty,
    Family,
    Operation,
    Problem,
    normalize,
    number_of_ops,
    perturb_int,
    register_family,
)

Equation_ = tuple[int, int, int]
_STATE = re.compile(r"^(?:(-?\d+)\*)?x(?:([+\-]\d+))?=(-?\d+)$")


def render_equation(state: Equation_) -> str:
    a, b, c = state
    left = "x" if a == 1 else f"{a}*x"
    if b > 0:
        left += f"+{b}"
    elif b < 0:
        left += f"-{-b}"
    return f"{left}={c}"


@register_family
class Equation(Family):
    name = "equation"

    def apply(self, state: Equation_, op: Operation) -> Equation_:
        a, b, c = state
        if op[0] == "sub":
            return a, b - op[1], c - op[1]
        return a // op[1], b, c // op[1]

    def render_step(self, state: Equation_, op: Operation, new: Equation_) -> str:
        return render_equation(new)

    def render_state(self, state: Equation_) -> str:
        return str(state[2])

    def prompt(self, start: Equation_, ops: Sequence[Operation]) -> str:
        return render_equation(start)

    def is_true(self, problem: Problem, step: str) -> bool:
        """True for an equation the problem's solution ``x`` satisfies."""
        match = _STATE.match(normalize(step))
        if not match:
            return False
        a, b, c = match.groups()
        return int(a or 1) * int(problem.answer) + int(b or 0) == int(c)

    def sample_start(self, rng: np.random.Generator, difficulty: Difficulty) -> Equation_:
        a = int(rng.integers(2, difficulty.max_operand + 1))
        x = int(rng.integers(0, 2 * difficulty.max_operand + 1))
        b = int(rng.integers(1, 2 * difficulty.max_operand + 1))
        return a, b, a * x + b

    def sample_ops(
        self, rng: np.random.Generator, difficulty: Difficulty, start: Equation_
    ) -> list[Operation]:
        """Subtract the constant in ``n - 1`` parts (more operations, more steps), then divide."""
        a, b, _ = start
        parts = max(1, min(number_of_ops(rng, difficulty) - 1, b))
        cuts = sorted(int(c) for c in rng.choice(np.arange(1, b), size=parts - 1, replace=False))
        bounds = [0, *cuts, b]
        return [("sub", hi - lo) for lo, hi in itertools.pairwise(bounds)] + [("div", a)]

    def perturb(self, state: Equation_, rng: np.random.Generator) -> Equation_:
        return state[0], state[1], perturb_int(state[2], rng)

    def miracle(
        self,
        steps_before: list[str],
        state: Equation_,
        op: Operation,
        final: Equation_,
        rng: np.random.Generator,
    ) -> list[str]:
        """An equation's last step already reads ``x=answer``: the miracle skips all the work
        before it and states it at once."""
        return [render_equation((1, 0, final[2]))]


EQUATION: Family = FAMILIES[Equation.name]
