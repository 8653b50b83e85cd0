"""``(3+4)*2`` solved by tool calls: ``add(a=3,b=4)=7``, then the answer is the call
``mul(a=7,k=2)``.

The answer is a call against a small tool schema (``TOOLS``): the last operation's call, which a
tool-call reward (``signals.tool_calls``) scores by format, tool name and parameters; the steps
are the intermediate calls with their results. A state is an int; an operation is
``(symbol, operand)`` as in ``arithmetic``.
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

TOOLS: dict[str, tuple[str, ...]] = {"add": ("a", "b"), "sub": ("a", "b"), "mul": ("a", "k")}
"""The tool schema: name -> parameter names. ``mul``'s multiplier is ``k``, so a call that picks
the right tool but the wrong parameter names earns only part of the credit."""
_TOOL_OF = {"+": "add", "-": "sub", "*": "mul"}
_APPLY = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b}
_STEP = re.compile(r"^(add|sub|mul)\(a=(-?\d+),(b|k)=(-?\d+)\)=(-?\d+)$")


def render_call(state: int, op: Operation) -> str:
    """The call applying ``op`` to ``state``: ``add(a=3,b=4)``."""
    tool = _TOOL_OF[op[0]]
    first, second = TOOLS[tool]
    return f"{tool}({first}={state},{second}={op[1]})"


@register_family
class ToolCalls(Family):
    name = "tool_calls"
    vocabulary = ("sub", "mul", "a", "b", "k")

    def apply(self, state: int, op: Operation) -> int:
        return _APPLY[_TOOL_OF[op[0]]](state, op[1])

    def render_step(self, state: int, op: Operation, new: int) -> str:
        return f"{render_call(state, op)}={new}"

    def render_state(self, state: int) -> str:
        return str(state)

    def prompt(self, start: int, ops: Sequence[Operation]) -> str:
        text = str(start)
        for index, (symbol, operand) in enumerate(ops):
            text = f"{text}{symbol}{operand}" if index == 0 else f"({text}){symbol}{operand}"
        return text

    def is_true(self, problem: Problem, step: str) -> bool:
        """A call of the schema with its parameters, whose stated result is right."""
        match = _STEP.match(normalize(step))
        if not match:
            return False
        tool, a, second, b, result = match.groups()
        return TOOLS[tool][1] == second and _APPLY[tool](int(a), int(b)) == int(result)

    def sample_start(self, rng: np.random.Generator, difficulty: Difficulty) -> int:
        return int(rng.integers(1, difficulty.max_operand + 1))

    def sample_ops(
        self, rng: np.random.Generator, difficulty: Difficulty, start: int
    ) -> list[Operation]:
        ops = []
        for _ in range(number_of_ops(rng, difficulty)):
            symbol = str(rng.choice(["+", "-", "*"]))
            low, high = (2, 3) if symbol == "*" else (1, difficulty.max_operand)
            ops.append((symbol, int(rng.integers(low, high + 1))))
        return ops

    def perturb(self, state: int, rng: np.random.Generator) -> int:
        return perturb_int(state, rng)

    def sample_problem(
        self, rng: np.random.Generator, difficulty: Difficulty
    ) -> tuple[Problem, int, list[Operation]]:
        """The steps are the calls before the last (with results); the answer is the last call."""
        start = self.sample_start(rng, difficulty)
        ops = self.sample_ops(rng, difficulty, start)
        steps, states = self.solve(start, ops)
        answer = render_call(states[-2], ops[-1])
        problem = Problem(self.name, self.prompt(start, ops), tuple(steps[:-1]), answer)
        return problem, start, ops


TOOL_CALLS: Family = FAMILIES[ToolCalls.name]
