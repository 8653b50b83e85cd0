"""``rev(add2(sort([3,1,2])))`` solved as ``sort([3,1,2])=[1,2,3]``, ``add2([1,2,3])=[3,4,5]``,
``rev([3,4,5])=[5,4,3]``; answer ``[5,4,3]``.

A state is a tuple of ints; operations are ``sort``, ``rev`` and ``add<k>``.
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

Values = tuple[int, ...]
_STEP = re.compile(r"^(sort|rev|add(\d+))\(\[([-\d,]*)\]\)=\[([-\d,]*)\]$")


def _render(values: Values) -> str:
    return "[" + ",".join(map(str, values)) + "]"


def _op_name(op: Operation) -> str:
    return f"add{op[1]}" if op[0] == "add" else op[0]


def _parse(text: str) -> Values:
    return tuple(int(v) for v in text.split(",") if v)


@register_family
class Lists(Family):
    name = "lists"

    def apply(self, state: Values, op: Operation) -> Values:
        if op[0] == "sort":
            return tuple(sorted(state))
        if op[0] == "rev":
            return state[::-1]
        return tuple(v + op[1] for v in state)

    def render_step(self, state: Values, op: Operation, new: Values) -> str:
        return f"{_op_name(op)}({_render(state)})={_render(new)}"

    def render_state(self, state: Values) -> str:
        return _render(state)

    def prompt(self, start: Values, ops: Sequence[Operation]) -> str:
        text = _render(start)
        for op in ops:
            text = f"{_op_name(op)}({text})"
        return text

    def is_true(self, problem: Problem, step: str) -> bool:
        match = _STEP.match(normalize(step))
        if not match:
            return False
        name, k, before, after = match.groups()
        op: Operation = ("add", int(k)) if k else (name, 0)
        return self.apply(_parse(before), op) == _parse(after)

    def sample_start(self, rng: np.random.Generator, difficulty: Difficulty) -> Values:
        length = int(rng.integers(2, difficulty.max_length + 1))
        return tuple(int(v) for v in rng.integers(0, 10, size=length))

    def sample_ops(
        self, rng: np.random.Generator, difficulty: Difficulty, start: Values
    ) -> list[Operation]:
        ops: list[Operation] = []
        for _ in range(number_of_ops(rng, difficulty)):
            # sort after sort and rev after rev are no-ops or undo each other: a solution that
            # skips them would still be valid, so they are never drawn
            kinds = [k for k in ("sort", "rev", "add") if not ops or k == "add" or k != ops[-1][0]]
            kind = str(rng.choice(kinds))
            ops.append(
                (kind, int(rng.integers(1, difficulty.max_operand + 1)) if kind == "add" else 0)
            )
        return ops

    def has_operand(self, op: Operation) -> bool:
        return op[0] == "add"

    def perturb(self, state: Values, rng: np.random.Generator) -> Values:
        index = int(rng.integers(len(state)))
        return (*state[:index], perturb_int(state[index], rng), *state[index + 1 :])


LISTS: Family = FAMILIES[Lists.name]
