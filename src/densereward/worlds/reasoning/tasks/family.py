"""The family interface: a state machine whose steps a program can check, and the registry.

A family renders states, operations and steps as short strings (so a character-level tokenizer
and a tiny LM can handle them) and says whether a step is a *true statement* on its own
(``is_true``), which is weaker than being the *right next step* (``verify.first_error``). Each
family is one module of this package; defining it with ``@register_family`` is all it takes.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from densereward.worlds.reasoning.tasks.format import render_response

State = Any
Operation = tuple[str, int]


@dataclass(frozen=True)
class Difficulty:
    """How hard a sampled problem is: ``min_ops``..``max_ops`` operations, operands up to
    ``max_operand`` (and list lengths up to ``max_length`` for ``lists``)."""

    min_ops: int = 2
    max_ops: int = 4
    max_operand: int = 9
    max_length: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.min_ops <= self.max_ops:
            raise ValueError(f"need 1 <= min_ops <= max_ops, got {self.min_ops}, {self.max_ops}")
        if self.max_operand < 2 or self.max_length < 2:
            raise ValueError("max_operand and max_length must be at least 2")


@dataclass(frozen=True)
class Problem:
    """One problem: its family, the prompt, the canonical steps and the answer."""

    family: str
    prompt: str
    steps: tuple[str, ...]
    answer: str

    @property
    def response(self) -> str:
        return render_response(self.steps, self.answer)


def normalize(text: str) -> str:
    return re.sub(r"\s+", "", text)


class Family(ABC):
    """A task family: how states change, how they read, how problems are drawn and corrupted."""

    name: ClassVar[str]
    vocabulary: ClassVar[tuple[str, ...]] = ()
    """Words this family writes beyond the base tokenizer's (``tokenizer.build_tokenizer``
    appends them, after every base token, only for the families that ask)."""

    @abstractmethod
    def apply(self, state: State, op: Operation) -> State: ...

    @abstractmethod
    def render_step(self, state: State, op: Operation, new: State) -> str: ...

    @abstractmethod
    def render_state(self, state: State) -> str: ...

    @abstractmethod
    def prompt(self, start: State, ops: Sequence[Operation]) -> str: ...

    @abstractmethod
    def is_true(self, problem: Problem, step: str) -> bool:
        """Whether ``step`` is a true statement about ``problem`` on its own."""

    @abstractmethod
    def sample_start(self, rng: np.random.Generator, difficulty: Difficulty) -> State: ...

    @abstractmethod
    def sample_ops(
        self, rng: np.random.Generator, difficulty: Difficulty, start: State
    ) -> list[Operation]: ...

    @abstractmethod
    def perturb(self, state: State, rng: np.random.Generator) -> State:
        """A nearby wrong state."""

    def has_operand(self, op: Operation) -> bool:
        """Whether ``op`` takes an operand (that a corruption could get wrong)."""
        return True

    def miracle(
        self,
        steps_before: list[str],
        state: State,
        op: Operation,
        final: State,
        rng: np.random.Generator,
    ) -> list[str]:
        """A solution that jumps from ``state`` to the right ``final`` state with no valid
        derivation (the step applies ``op`` to a perturbed state and claims the final one)."""
        return [*steps_before, self.render_step(self.perturb(state, rng), op, final)]

    def solve(self, start: State, ops: Sequence[Operation]) -> tuple[list[str], list[State]]:
        states, steps = [start], []
        for op in ops:
            new = self.apply(states[-1], op)
            steps.append(self.render_step(states[-1], op, new))
            states.append(new)
        return steps, states

    def sample_problem(
        self, rng: np.random.Generator, difficulty: Difficulty
    ) -> tuple[Problem, State, list[Operation]]:
        start = self.sample_start(rng, difficulty)
        ops = self.sample_ops(rng, difficulty, start)
        steps, states = self.solve(start, ops)
        answer = self.render_state(states[-1])
        return Problem(self.name, self.prompt(start, ops), tuple(steps), answer), start, ops

    def sample(self, rng: np.random.Generator, difficulty: Difficulty | None = None) -> Problem:
        return self.sample_problem(rng, difficulty or Difficulty())[0]


FAMILIES: dict[str, Family] = {}
F = TypeVar("F", bound=type[Family])


def register_family(cls: F) -> F:
    """Class decorator: make a family available by its ``name`` (``TaskSpec.families``)."""
    FAMILIES[cls.name] = cls()
    return cls


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise KeyError(f"unknown task family {name!r}; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def number_of_ops(rng: np.random.Generator, difficulty: Difficulty) -> int:
    return int(rng.integers(difficulty.min_ops, difficulty.max_ops + 1))


def perturb_int(value: int, rng: np.random.Generator) -> int:
    delta = int(rng.choice([-2, -1, 1, 2, 10, -10]))
    return value + delta
