from __future__ import annotations

import itertools

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from densereward.core.segments import Groups, Segments, discounted_reverse_cumsum
from tests.reference.estimators import discounted_returns
from tests.strategies import lengths


def _segments(sizes: list[int]) -> Segments:
    offsets = torch.zeros(len(sizes) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.tensor(sizes), 0)
    return Segments(offsets)


@given(
    lengths(max_trajectories=8, max_length=300),
    st.sampled_from([0.0, 0.3, 0.9, 0.999, 1.0]),
    st.sampled_from([2, 3, 8, 64]),
    st.integers(0, 2**31),
)
def test_discounted_reverse_cumsum_matches_backward_recursion(sizes, gamma, block, seed) -> None:
    # Small blocks force two and three levels of the blocked recursion.
    x = np.random.default_rng(seed).normal(size=sum(sizes))
    out = discounted_reverse_cumsum(torch.from_numpy(x), _segments(sizes), gamma, block)
    bounds = np.cumsum([0, *sizes])
    expected = np.concatenate(
        [discounted_returns(x[a:b], gamma) for a, b in itertools.pairwise(bounds)]
    )
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-10)


def test_discounted_scan_does_not_overflow_on_long_segments() -> None:
    # 20 000 steps with gamma 0.5: a 1/gamma^t formulation overflows float32 after ~128 steps.
    x = torch.ones(20_000, dtype=torch.float32)
    out = discounted_reverse_cumsum(x, _segments([20_000]), 0.5)
    assert bool(torch.isfinite(out).all())
    remaining = torch.arange(20_000, 0, -1, dtype=torch.float64)
    torch.testing.assert_close(out.double(), 2.0 - 0.5 ** (remaining - 1), rtol=1e-6, atol=1e-6)


def test_discounted_scan_is_differentiable() -> None:
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    discounted_reverse_cumsum(x, _segments([3]), 0.5).sum().backward()
    # d/dx_s sum_t y_t = sum_{t <= s} gamma^(s - t)
    torch.testing.assert_close(x.grad, torch.tensor([1.0, 1.5, 1.75]))


@given(st.lists(st.integers(0, 4), min_size=1, max_size=30), st.integers(0, 2**31))
def test_group_statistics_match_numpy(labels, seed) -> None:
    x = np.random.default_rng(seed).normal(size=len(labels))
    groups = Groups.from_labels(torch.tensor(labels))
    mean = groups.mean(torch.from_numpy(x))
    loo = groups.leave_one_out_mean(torch.from_numpy(x))
    for g, label in enumerate(sorted(set(labels))):
        members = [i for i, v in enumerate(labels) if v == label]
        np.testing.assert_allclose(mean[g].item(), np.mean(x[members]), rtol=1e-12)
        for i in members:
            others = [j for j in members if j != i]
            expected = np.mean(x[others]) if others else x[i]
            np.testing.assert_allclose(loo[i].item(), expected, rtol=1e-12)
