"""``((8+2)*3)-1`` solved as ``8+2=10``, ``10*3=30``, ``30-1=29``; answer ``29``.

A state is an int; an operation is ``(symbol, operand)``.
"""

from __future__ import annotations

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

_OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
_STEP = re.compile(r"^(-?\d+)([+\-*])(\d+)=(-?\d+)$")


@register_family
class Arithmetic(Family):
    name = "arithmetic"

    def apply(self, state: int, op: Operation) -> int:
        return _OPERATIONS[op[0]](state, op[1])

    def render_step(self, state: int, op: Operation, new: int) -> str:
        return f"{state}{op[0]}{op[1]}={new}"

    def render_state(self, state: int) -> str:
        return str(state)

    def prompt(self, start: int, ops: Sequence[Operation]) -> str:
        text = str(start)
        for index, (symbol, operand) in enumerate(ops):
            text = f"{text}{symbol}{operand}" if index == 0 else f"({text}){symbol}{operand}"
        return text

    def is_true(self, problem: Problem, step: str) -> bool:
        match = _STEP.match(normalize(step))
        if not match:
            return False
        a, symbol, b, result = match.groups()
        return _OPERATIONS[symbol](int(a), int(b)) == int(result)

    def sample_start(self, rng: np.random.Generator, difficulty: Difficulty) -> int:
        return int(rng.integers(1, difficulty.max_operand + 1))

    def sample_ops(
        self, rng: np.random.Generator, difficulty: Difficulty, start: int
    ) -> list[Operation]:
        ops = []
        for _ in range(number_of_ops(rng, difficulty)):
            symbol = str(rng.choice(["+", "-", "*"]))
            # small multipliers keep numbers short enough for a character-level model
            low, high = (2, 3) if symbol == "*" else (1, difficulty.max_operand)
            ops.append((symbol, int(rng.integers(low, high + 1))))
        return ops

    def perturb(self, state: int, rng: np.random.Generator) -> int:
        return perturb_int(state, rng)


ARITHMETIC: Family = FAMILIES[Arithmetic.name]
