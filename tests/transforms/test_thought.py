"""Thought-level aggregation against a loop over runs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

from densereward.transforms.thought import thought_rewards
from tests.strategies import batches


def slow_thoughts(scores, offsets, threshold, mode):
    out = []
    for i in range(len(offsets) - 1):
        row = scores[offsets[i] : offsets[i + 1]]
        k = 0
        while k < len(row):
            j = k
            while j + 1 < len(row) and (row[j + 1] >= threshold) == (row[k] >= threshold):
                j += 1
            value = (
                sum(row[k : j + 1]) / (j + 1 - k)
                if mode == "mean"
                else (1.0 if row[k] >= threshold else -1.0)
            )
            out += [value] * (j + 1 - k)
            k = j + 1
    return out


@settings(max_examples=100, deadline=None)
@given(batches())
def test_thought_rewards_match_a_loop(batch):
    scores = batch.step("prm")
    for mode in ("mean", "verdict"):
        fast = thought_rewards(scores, batch.segments, 0.5, mode)
        slow = slow_thoughts(scores.tolist(), batch.offsets.tolist(), 0.5, mode)
        assert fast.tolist() == pytest.approx(slow)


def test_thought_sums_are_preserved_by_mean_mode():
    from densereward.core.segments import Segments, segment_sum

    segments = Segments(torch.tensor([0, 5]))
    scores = torch.tensor([0.9, 0.7, 0.2, 0.1, 0.8], dtype=torch.float64)
    out = thought_rewards(scores, segments, 0.5)
    assert out.tolist() == pytest.approx([0.8, 0.8, 0.15, 0.15, 0.8])
    assert float(segment_sum(out, segments)[0]) == pytest.approx(float(scores.sum()))
