"""Multi-step problems whose every step a program can check exactly.

A problem is a start state and a list of operations; solving it means applying them one per step.
Each family renders states, operations and steps as short strings (so a character-level tokenizer
and a tiny LM can handle them) and can say whether a step is a *true statement* on its own
(``is_true``), which is weaker than being the *right next step* (``first_error``):

- ``arithmetic``: ``((8+2)*3)-1`` solved as ``8+2=10``, ``10*3=30``, ``30-1=29``; answer ``29``.
- ``equation``: ``3*x+4=19`` solved as ``3*x=15``, ``x=5``; answer ``5``.
- ``lists``: ``rev(add2(sort([3,1,2])))`` solved as ``sort([3,1,2])=[1,2,3]``,
  ``add2([1,2,3])=[3,4,5]``, ``rev([3,4,5])=[5,4,3]``; answer ``[5,4,3]``.

A response is the steps joined by the step tag, one more tag, then ``#`` and the answer:
``8+2=10ки10*3=30ки30-1=29ки#29``. Exact process labels follow Math-Shepherd's convention: every
step before the first error is good, the first error and everything after it bad.

Difficulty knobs: the number of operations and the size of operands.

>>> problem = ARITHMETIC.sample(np.random.default_rng(0), Difficulty(min_ops=3, max_ops=3))
>>> response = render_response(problem.steps, problem.answer)
>>> grade(problem, response).first_error, grade(problem, response).correct
(-1, True)
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STEP_TAG = "ки"
ANSWER_MARK = "#"


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


def render_response(steps: Sequence[str], answer: str) -> str:
    return "".join(step + STEP_TAG for step in steps) + ANSWER_MARK + answer


def parse_response(response: str) -> tuple[tuple[str, ...], str | None]:
    """Split a response into its steps and its answer (None when there is no ``#``).

    >>> parse_response("1+2=3ки3*2=6ки#6")
    (('1+2=3', '3*2=6'), '6')
    """
    body, mark, answer = response.rpartition(ANSWER_MARK)
    if not mark:
        body, answer_or_none = response, None
    else:
        answer_or_none = answer.strip()
    steps = tuple(s.strip() for s in body.split(STEP_TAG))
    if steps and steps[-1] == "":
        steps = steps[:-1]
    return steps, answer_or_none


def tag_aligned(response: str, values: Sequence[float]) -> list[float]:
    """One value per step tag of ``response``, as its step spans are cut: the values of the parsed
    steps, then 0 for tags the parser does not count as steps (a tag written after the answer
    mark, ``...#6ки``: nothing after the answer is progress)."""
    tags = response.count(STEP_TAG)
    return [*values[:tags], *[0.0] * (tags - len(values[:tags]))]


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


def _normalize(text: str) -> str:
    return re.sub(r"\s+", "", text)


def first_error(problem: Problem, steps: Sequence[str]) -> int:
    """Index of the earliest step that differs from the right next step (-1 if none).

    >>> p = Problem("arithmetic", "(1+2)*2", ("1+2=3", "3*2=6"), "6")
    >>> first_error(p, ["1+2=3", "3*2=7"]), first_error(p, ["1+2=3"]), first_error(p, p.steps)
    (1, 1, -1)
    """
    for index, step in enumerate(steps):
        if index >= len(problem.steps) or _normalize(step) != _normalize(problem.steps[index]):
            return index
    return -1 if len(steps) == len(problem.steps) else len(steps)


def grade(problem: Problem, response: str) -> Grade:
    """The exact step and outcome verdict on a response."""
    steps, answer = parse_response(response)
    correct = answer is not None and _normalize(answer) == _normalize(problem.answer)
    return Grade(steps, answer, first_error(problem, steps), correct)


# --------------------------------------------------------------------------- families
State = Any
Operation = tuple[str, int]


@dataclass(frozen=True)
class Family:
    """A state machine: ``apply(state, op)``, ``render_step(state, op, new)``, ``render_state``,
    ``prompt(start, ops)``, ``truth(step)`` (whether a step is a true statement), ``sample_start``
    and ``sample_ops``; ``perturb(state, rng)`` returns a nearby wrong state."""

    name: str
    apply: Callable[[State, Operation], State]
    render_step: Callable[[State, Operation, State], str]
    render_state: Callable[[State], str]
    prompt: Callable[[State, Sequence[Operation]], str]
    truth: Callable[[str], bool]
    sample_start: Callable[[np.random.Generator, Difficulty], State]
    sample_ops: Callable[[np.random.Generator, Difficulty, State], list[Operation]]
    perturb: Callable[[State, np.random.Generator], State]

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


def _int_perturb(value: int, rng: np.random.Generator) -> int:
    delta = int(rng.choice([-2, -1, 1, 2, 10, -10]))
    return value + delta


# arithmetic: state is an int; op is (symbol, operand)
_ARITH = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
_ARITH_STEP = re.compile(r"^(-?\d+)([+\-*])(\d+)=(-?\d+)$")


def _arith_truth(step: str) -> bool:
    match = _ARITH_STEP.match(_normalize(step))
    if not match:
        return False
    a, symbol, b, result = match.groups()
    return _ARITH[symbol](int(a), int(b)) == int(result)


def _arith_prompt(start: int, ops: Sequence[Operation]) -> str:
    text = str(start)
    for index, (symbol, operand) in enumerate(ops):
        text = f"{text}{symbol}{operand}" if index == 0 else f"({text}){symbol}{operand}"
    return text


def _n_ops(rng: np.random.Generator, d: Difficulty) -> int:
    return int(rng.integers(d.min_ops, d.max_ops + 1))


def _arith_ops(rng: np.random.Generator, d: Difficulty, start: int) -> list[Operation]:
    ops = []
    for _ in range(_n_ops(rng, d)):
        symbol = str(rng.choice(["+", "-", "*"]))
        # small multipliers keep numbers short enough for a character-level model
        low, high = (2, 3) if symbol == "*" else (1, d.max_operand)
        ops.append((symbol, int(rng.integers(low, high + 1))))
    return ops


ARITHMETIC = Family(
    name="arithmetic",
    apply=lambda a, op: _ARITH[op[0]](a, op[1]),
    render_step=lambda a, op, new: f"{a}{op[0]}{op[1]}={new}",
    render_state=str,
    prompt=_arith_prompt,
    truth=_arith_truth,
    sample_start=lambda rng, d: int(rng.integers(1, d.max_operand + 1)),
    sample_ops=_arith_ops,
    perturb=_int_perturb,
)


# equation: state (a, b, c) means a*x+b=c; ops subtract b from both sides, then divide by a
def _eq_render(state: tuple[int, int, int]) -> str:
    a, b, c = state
    left = "x" if a == 1 else f"{a}*x"
    if b > 0:
        left += f"+{b}"
    elif b < 0:
        left += f"-{-b}"
    return f"{left}={c}"


def _eq_apply(state: tuple[int, int, int], op: Operation) -> tuple[int, int, int]:
    a, b, c = state
    if op[0] == "sub":
        return a, b - op[1], c - op[1]
    return a // op[1], b, c // op[1]


_EQ_STATE = re.compile(r"^(?:(-?\d+)\*)?x(?:([+\-]\d+))?=(-?\d+)$")


def _eq_truth_given(x: int) -> Callable[[str], bool]:
    def truth(step: str) -> bool:
        match = _EQ_STATE.match(_normalize(step))
        if not match:
            return False
        a, b, c = match.groups()
        return int(a or 1) * x + int(b or 0) == int(c)

    return truth


def _eq_truth(step: str) -> bool:
    """Whether a step is an equation of the right shape (its truth needs the problem's x)."""
    return _EQ_STATE.match(_normalize(step)) is not None


def _eq_start(rng: np.random.Generator, d: Difficulty) -> tuple[int, int, int]:
    a = int(rng.integers(2, d.max_operand + 1))
    x = int(rng.integers(0, 2 * d.max_operand + 1))
    b = int(rng.integers(1, 2 * d.max_operand + 1))
    return a, b, a * x + b


def _eq_ops(
    rng: np.random.Generator, d: Difficulty, start: tuple[int, int, int]
) -> list[Operation]:
    """Subtract the constant in ``n - 1`` parts (more operations, more steps), then divide."""
    a, b, _ = start
    parts = max(1, min(_n_ops(rng, d) - 1, b))
    cuts = sorted(int(c) for c in rng.choice(np.arange(1, b), size=parts - 1, replace=False))
    bounds = [0, *cuts, b]
    return [("sub", hi - lo) for lo, hi in itertools.pairwise(bounds)] + [("div", a)]


EQUATION = Family(
    name="equation",
    apply=_eq_apply,
    render_step=lambda state, op, new: _eq_render(new),
    render_state=lambda state: str(state[2]),
    prompt=lambda start, ops: _eq_render(start),
    truth=_eq_truth,
    sample_start=_eq_start,
    sample_ops=_eq_ops,
    perturb=lambda s, rng: (s[0], s[1], _int_perturb(s[2], rng)),
)


# lists: state is a tuple of ints; ops sort, rev, add<k>
def _list_render(values: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, values)) + "]"


def _list_apply(values: tuple[int, ...], op: Operation) -> tuple[int, ...]:
    if op[0] == "sort":
        return tuple(sorted(values))
    if op[0] == "rev":
        return values[::-1]
    return tuple(v + op[1] for v in values)


def _op_name(op: Operation) -> str:
    return f"add{op[1]}" if op[0] == "add" else op[0]


_LIST_STEP = re.compile(r"^(sort|rev|add(\d+))\(\[([-\d,]*)\]\)=\[([-\d,]*)\]$")


def _list_truth(step: str) -> bool:
    match = _LIST_STEP.match(_normalize(step))
    if not match:
        return False
    name, k, before, after = match.groups()
    parse = lambda text: tuple(int(v) for v in text.split(",") if v)  # noqa: E731
    op: Operation = ("add", int(k)) if k else (name, 0)
    return _list_apply(parse(before), op) == parse(after)


def _list_prompt(start: tuple[int, ...], ops: Sequence[Operation]) -> str:
    text = _list_render(start)
    for op in ops:
        text = f"{_op_name(op)}({text})"
    return text


def _list_ops(rng: np.random.Generator, d: Difficulty, start: tuple[int, ...]) -> list[Operation]:
    ops: list[Operation] = []
    for _ in range(_n_ops(rng, d)):
        # sort after sort and rev after rev are no-ops or undo each other: a solution that
        # skips them would still be valid, so they are never drawn
        kinds = [k for k in ("sort", "rev", "add") if not ops or k == "add" or k != ops[-1][0]]
        kind = str(rng.choice(kinds))
        ops.append((kind, int(rng.integers(1, d.max_operand + 1)) if kind == "add" else 0))
    return ops


def _list_perturb(values: tuple[int, ...], rng: np.random.Generator) -> tuple[int, ...]:
    index = int(rng.integers(len(values)))
    return (*values[:index], _int_perturb(values[index], rng), *values[index + 1 :])


LISTS = Family(
    name="lists",
    apply=_list_apply,
    render_step=lambda s, op, new: f"{_op_name(op)}({_list_render(s)})={_list_render(new)}",
    render_state=_list_render,
    prompt=_list_prompt,
    truth=_list_truth,
    sample_start=lambda rng, d: tuple(
        int(v) for v in rng.integers(0, 10, size=int(rng.integers(2, d.max_length + 1)))
    ),
    sample_ops=_list_ops,
    perturb=_list_perturb,
)

FAMILIES: dict[str, Family] = {f.name: f for f in (ARITHMETIC, EQUATION, LISTS)}


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise KeyError(f"unknown task family {name!r}; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


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


def step_is_true(problem: Problem, step: str) -> bool:
    """Whether ``step`` is a true statement on its own (not whether it is the right next step).

    This is what a lenient step judge checks; it is blind to repeated or irrelevant steps.
    """
    if problem.family == "equation":
        return _eq_truth_given(int(problem.answer))(step)
    return family(problem.family).truth(step)


# --------------------------------------------------------------------------- corruption
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
      solution stops there — the final answer is right, the process is not.

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
    if kind == "operand" and ops[at][0] in ("sort", "rev"):  # no operand to get wrong
        kind = "arithmetic"
    _, states = fam.solve(sample.start, ops)
    steps = list(problem.steps[:at])
    state = states[at]
    if kind == "miracle":
        final = states[-1]
        if problem.family == "equation":
            # an equation's last step already reads "x=answer": the miracle skips the work before
            steps, step = [], _eq_render((1, 0, final[2]))
        else:
            step = fam.render_step(fam.perturb(state, rng), ops[at], final)
        steps.append(step)
        new_steps, answer = tuple(steps), problem.answer
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
