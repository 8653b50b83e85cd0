"""``f(1)=5,f(2)=7`` solved as ``7-5=2`` (the slope), ``5-2=3`` (the intercept); the answer is
the program ``x*2+3``, a one-line function body in restricted Python checked by unit tests.

A state ``(a, b)`` is the function ``f(x) = a*x + b``; the two operations read its slope and its
intercept off the examples. The answer is graded by running ``def f(x): return <answer>`` on
``TEST_INPUTS`` (``program_tests``, for ``signals.unit_tests``): the examples shown in the prompt
are two of the tests, the others are hidden. The difficulty's operation counts do not apply
(every problem has these two steps); ``max_operand`` bounds ``a`` and ``b``.
"""

from __future__ import annotations

import ast
import json
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
    register_family,
)

Affine = tuple[int, int]
PROGRAM_TEMPLATE = "def f(x):\n    return {program}\n"
"""How an answer becomes a program (``UnitTestSignal.template``)."""
TEST_INPUTS = (0, 1, 2, 3, 4, 5, 6, 7)
"""The unit tests' inputs: 1 and 2 are the prompt's examples."""
_STEP = re.compile(r"^(-?\d+)-(-?\d+)=(-?\d+)$")
_PROMPT = re.compile(r"^f\(1\)=(-?\d+),f\(2\)=(-?\d+)$")
_ALLOWED = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Name, ast.Constant, ast.Load)
_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod, ast.USub)


def is_restricted(program: str) -> bool:
    """Whether ``program`` is an expression of ``x``, integers and ``+ - * // %`` only.

    >>> is_restricted("(x+3)*2"), is_restricted("__import__('os')"), is_restricted("x**99")
    (True, False, False)
    """
    try:
        tree = ast.parse(program.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, _OPERATORS):
            continue
        if not isinstance(node, _ALLOWED):
            return False
        if isinstance(node, ast.Name) and node.id != "x":
            return False
        if isinstance(node, ast.Constant) and type(node.value) is not int:
            return False
    return True


def program_tests(problem: Problem) -> str:
    """The problem's unit tests as JSON, ``[{"args": [x], "expected": f(x)}, ...]``."""
    match = _PROMPT.match(problem.prompt)
    if not match:
        raise ValueError(f"not a programs prompt: {problem.prompt!r}")
    one, two = int(match.group(1)), int(match.group(2))
    slope, intercept = two - one, 2 * one - two
    return json.dumps([{"args": [x], "expected": slope * x + intercept} for x in TEST_INPUTS])


@register_family
class Programs(Family):
    name = "programs"
    vocabulary = ("f",)

    def apply(self, state: Affine, op: Operation) -> Affine:
        return state  # reading the slope or the intercept does not change the function

    def render_step(self, state: Affine, op: Operation, new: Affine) -> str:
        a, b = state
        if op[0] == "slope":
            return f"{2 * a + b}-{a + b}={a}"
        return f"{a + b}-{a}={b}"

    def render_state(self, state: Affine) -> str:
        return f"x*{state[0]}+{state[1]}"

    def prompt(self, start: Affine, ops: Sequence[Operation]) -> str:
        a, b = start
        return f"f(1)={a + b},f(2)={2 * a + b}"

    def is_true(self, problem: Problem, step: str) -> bool:
        match = _STEP.match(normalize(step))
        if not match:
            return False
        left, right, result = (int(v) for v in match.groups())
        return left - right == result

    def sample_start(self, rng: np.random.Generator, difficulty: Difficulty) -> Affine:
        a = int(rng.integers(1, difficulty.max_operand + 1))
        return a, int(rng.integers(0, difficulty.max_operand + 1))

    def sample_ops(
        self, rng: np.random.Generator, difficulty: Difficulty, start: Affine
    ) -> list[Operation]:
        return [("slope", 0), ("intercept", 0)]

    def has_operand(self, op: Operation) -> bool:
        return False

    def perturb(self, state: Affine, rng: np.random.Generator) -> Affine:
        return state[0], state[1] + int(rng.choice([-2, -1, 1, 2]))


PROGRAMS: Family = FAMILIES[Programs.name]
