"""Multi-step problems whose every step a program can check exactly.

A problem is a start state and a list of operations; solving it means applying them one per step.
The package is split by job: ``format`` (how a response is written), ``family`` (the interface
every task family implements, and their registry), one module per family (``arithmetic``,
``equation``, ``lists``, ``tool_calls``, ``programs``), ``sampling``, ``verify`` (the exact verifiers) and ``corrupt``
(controlled mistakes). Every module is imported here, so a new family registers by being written.

- ``arithmetic``: ``((8+2)*3)-1`` solved as ``8+2=10``, ``10*3=30``, ``30-1=29``; answer ``29``.
- ``equation``: ``3*x+4=19`` solved as ``3*x=15``, ``x=5``; answer ``5``.
- ``lists``: ``rev(add2(sort([3,1,2])))`` solved as ``sort([3,1,2])=[1,2,3]``,
  ``add2([1,2,3])=[3,4,5]``, ``rev([3,4,5])=[5,4,3]``; answer ``[5,4,3]``.
- ``tool_calls``: ``(3+4)*2`` solved as ``add(a=3,b=4)=7``; the answer is the call
  ``mul(a=7,k=2)`` against a small tool schema (``tool_calls.TOOLS``).
- ``programs``: ``f(1)=5,f(2)=7`` solved as ``7-5=2``, ``5-2=3``; the answer is the program
  ``x*2+3`` (restricted Python), checked by unit tests (``programs.program_tests``).

A response is the steps joined by the step tag, one more tag, then ``#`` and the answer:
``8+2=10ки10*3=30ки30-1=29ки#29``. Difficulty knobs: the number of operations and the size of
operands.

>>> import numpy as np
>>> problem = family("arithmetic").sample(np.random.default_rng(0), Difficulty(3, 3))
>>> response = render_response(problem.steps, problem.answer)
>>> grade(problem, response).first_error, grade(problem, response).correct
(-1, True)
"""

from __future__ import annotations

from densereward.core.registry import import_submodules
from densereward.worlds.reasoning.tasks.corrupt import CORRUPTIONS, Corrupted, corrupt
from densereward.worlds.reasoning.tasks.family import (
    FAMILIES,
    Difficulty,
    Family,
    Operation,
    Problem,
    State,
    family,
    register_family,
)
from densereward.worlds.reasoning.tasks.format import (
    ANSWER_MARK,
    STEP_TAG,
    TEXT_FORMAT,
    parse_response,
    render_response,
    tag_aligned,
)
from densereward.worlds.reasoning.tasks.sampling import Sample, TaskSpec, sample_problems
from densereward.worlds.reasoning.tasks.verify import (
    Grade,
    first_error,
    grade,
    span_labels,
    step_is_true,
)

import_submodules(__name__)

__all__ = [
    "ANSWER_MARK",
    "CORRUPTIONS",
    "FAMILIES",
    "STEP_TAG",
    "TEXT_FORMAT",
    "Corrupted",
    "Difficulty",
    "Family",
    "Grade",
    "Operation",
    "Problem",
    "Sample",
    "State",
    "TaskSpec",
    "corrupt",
    "family",
    "first_error",
    "grade",
    "parse_response",
    "register_family",
    "render_response",
    "sample_problems",
    "span_labels",
    "step_is_true",
    "tag_aligned",
]
