"""Scoring reward models on the reasoning world: first-error predictions on ProcessBench-format
items (exact labels from ``export.processbench_records``) and PRM throughput."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from densereward.core.segments import Segments, first_below
from densereward.models.language import (
    encode_rows,
    position_ids,
    response_step_spans,
    span_end_positions,
    token_logprobs,
)
from densereward.models.prm import ProcessRewardModel
from densereward.worlds.reasoning.tasks import ANSWER_MARK, STEP_TAG


def _rows(tokenizer: Any, records: Sequence[dict[str, Any]]) -> tuple[Any, np.ndarray, np.ndarray]:
    """Each item as the policy would have written it: steps with tags, then ``#answer``.

    Returns the rows, the number of tagged steps per item and their spans.
    """
    prompts, responses = [], []
    for record in records:
        steps = list(record["steps"])
        body, _, answer = steps[-1].rpartition(ANSWER_MARK)
        steps[-1] = body
        prompts.append(record["problem"] + "=?")
        responses.append("".join(s + STEP_TAG for s in steps) + ANSWER_MARK + answer)
    rows = encode_rows(tokenizer, prompts, responses)
    lengths, spans = response_step_spans(rows, int(tokenizer.convert_tokens_to_ids(STEP_TAG)))
    # drop each item's tail span (the answer): the items' steps are the tagged ones
    keep = np.ones(len(spans), dtype=bool)
    keep[np.cumsum(lengths) - 1] = False
    return rows, lengths - 1, spans[keep]


def prm_first_errors(
    prm: ProcessRewardModel,
    tokenizer: Any,
    records: Sequence[dict[str, Any]],
    threshold: float = 0.5,
) -> list[int]:
    """The first step whose PRM score is below ``threshold`` (-1 if none), per item."""
    rows, lengths, spans = _rows(tokenizer, records)
    scores = prm.score(rows, span_end_positions(rows.prompt_width, lengths, spans))
    offsets = torch.as_tensor(np.concatenate([[0], np.cumsum(lengths)]))
    return first_below(scores, Segments(offsets), threshold).tolist()


def implicit_first_errors(
    phi: Any, reference: Any, tokenizer: Any, records: Sequence[dict[str, Any]], beta: float
) -> list[int]:
    """PRIME's implicit PRM as a step judge: ``q_k = Σ_{t ≤ end of step k} β log π_φ/π_ref``;
    the first step with ``σ(q_k) < 0.5`` (``q_k < 0``)."""
    rows, lengths, spans = _rows(tokenizer, records)
    with torch.no_grad():
        ratio = beta * (token_logprobs(phi, rows) - token_logprobs(reference, rows))
    cumulative = ratio.double().cumsum(1)
    row = np.repeat(np.arange(len(lengths)), lengths)
    q = cumulative[torch.as_tensor(row), torch.as_tensor(spans[:, 1] - 1)]
    offsets = torch.as_tensor(np.concatenate([[0], np.cumsum(lengths)]))
    return first_below(q, Segments(offsets), 0.0).tolist()


def prm_throughput(
    prm: ProcessRewardModel, tokenizer: Any, records: Sequence[dict[str, Any]], repeats: int = 20
) -> dict[str, float]:
    """Tokens per second of PRM scoring (one pass, head at tags) and of a plain forward pass of
    the same causal LM on the same rows (best of ``repeats``, the two interleaved)."""
    rows, lengths, spans = _rows(tokenizer, records)
    positions = span_end_positions(rows.prompt_width, lengths, spans)
    tokens = int(rows.attention_mask.sum())
    ids, mask = rows.input_ids, rows.attention_mask

    def plain() -> None:
        with torch.no_grad():
            prm.backbone(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask))

    def scored() -> None:
        prm.score(rows, positions, chunk=len(records))

    calls = {"forward": plain, "prm": scored}
    best = dict.fromkeys(calls, float("inf"))
    for call in calls.values():
        call()  # warm-up
    # interleaved, so drift in the machine's speed hits both alike
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - start)
    timings = {name: tokens / seconds for name, seconds in best.items()}
    return {
        "tokens": float(tokens),
        "forward_tokens_per_s": timings["forward"],
        "prm_tokens_per_s": timings["prm"],
        "ratio": timings["prm"] / timings["forward"],
    }
