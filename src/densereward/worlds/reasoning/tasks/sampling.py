"""Drawing problems: which families, how hard, reproducible from a seed."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from densereward.worlds.reasoning.tasks.family import (
    Difficulty,
    Operation,
    Problem,
    State,
    family,
)


@dataclass(frozen=True)
class TaskSpec:
    """Which families to draw from, and how hard."""

    families: tuple[str, ...] = ("arithmetic",)
    difficulty: Difficulty = field(default_factory=Difficulty)

    def __post_init__(self) -> None:
        for name in self.families:
            family(name)


@dataclass(frozen=True)
class Sample:
    """A problem plus what corruption needs: its start state and operations."""

    problem: Problem
    start: State
    ops: tuple[Operation, ...]


def sample_problems(spec: TaskSpec, n: int, seed: int) -> list[Sample]:
    """``n`` problems, families chosen uniformly, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        fam = family(str(rng.choice(list(spec.families))))
        problem, start, ops = fam.sample_problem(rng, spec.difficulty)
        out.append(Sample(problem, start, tuple(ops)))
    return out
