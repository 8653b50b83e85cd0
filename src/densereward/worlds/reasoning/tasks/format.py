"""How a response is written: steps joined by the step tag, one more tag, ``#`` and the answer.

``8+2=10ки10*3=30ки30-1=29ки#29``
"""

from __future__ import annotations

from collections.abc import Sequence

from densereward.core.components import TextFormat

STEP_TAG = "ки"
ANSWER_MARK = "#"
TEXT_FORMAT = TextFormat(STEP_TAG, ANSWER_MARK)
"""What the world's signals are told (``SignalContext.text_format``)."""


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
