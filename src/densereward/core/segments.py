"""Vectorized kernels over ragged segments (CSR ``offsets``) and over groups.

Every estimator and transform is built from these. None of them loops in Python over segments,
groups, steps or tokens: reductions go through ``segment_reduce``/``index_add``, broadcasts
through gathers, and the discounted scan through small dense matrix products (see
:func:`discounted_reverse_cumsum`). All functions take and return ``torch.Tensor`` on the caller's
device and dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

# Width of one block of the blocked discounted scan. 64 makes the in-block product a
# [rows, 64] x [64, 64] matmul, which runs near memory speed on CPU and GPU alike.
SCAN_BLOCK = 64


# Dtypes NumPy can view without a copy; bfloat16 (and complex) stay on the torch path.
_NUMPY_DTYPES = (torch.float64, torch.float32, torch.float16, torch.int64, torch.int32, torch.bool)


def _numpy_ok(x: Tensor) -> bool:
    """Whether a CPU fast path through a zero-copy NumPy view is safe for ``x``."""
    return x.device.type == "cpu" and not x.requires_grad and x.dtype in _NUMPY_DTYPES


def repeat(values: Tensor, counts: Tensor, total: int) -> Tensor:
    """``values[i]`` repeated ``counts[i]`` times, ``[total]``.

    NumPy's ``repeat`` is about 8x faster than ``torch.repeat_interleave`` on CPU; it is used
    through zero-copy views for CPU tensors of NumPy dtypes that need no gradient.
    """
    if _numpy_ok(values) and _numpy_ok(counts):
        return torch.from_numpy(np.repeat(values.numpy(), counts.numpy()))
    return torch.repeat_interleave(values, counts, output_size=total)


def expand_ranges(starts: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """Concatenated ``range(starts[i], starts[i] + counts[i])``, and the range index of each entry."""
    total = int(counts.sum())
    owner = repeat(torch.arange(counts.shape[0], device=counts.device), counts, total)
    first = torch.cumsum(counts, 0) - counts
    within = torch.arange(total, device=counts.device) - torch.index_select(first, 0, owner)
    return torch.index_select(starts, 0, owner) + within, owner


@dataclass(frozen=True, eq=False)
class Segments:
    """Boundaries of ``len(offsets) - 1`` consecutive segments of a flat array.

    Segment ``i`` covers ``flat[offsets[i]:offsets[i + 1]]``. Index tensors derived from the
    offsets are computed once and cached, since every kernel needs them.

    >>> s = Segments(torch.tensor([0, 2, 5]))
    >>> s.ids.tolist(), s.positions.tolist()
    ([0, 0, 1, 1, 1], [0, 1, 0, 1, 2])
    """

    offsets: Tensor

    @property
    def count(self) -> int:
        return self.offsets.shape[0] - 1

    @cached_property
    def total(self) -> int:
        return int(self.offsets[-1])

    @cached_property
    def lengths(self) -> Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    @cached_property
    def nonempty(self) -> bool:
        return bool((self.lengths > 0).all())

    @cached_property
    def max_length(self) -> int:
        return int(self.lengths.max()) if self.count else 0

    @cached_property
    def ids(self) -> Tensor:
        """Segment index of every flat element, ``[total]``."""
        return torch.repeat_interleave(
            torch.arange(self.count, device=self.offsets.device),
            self.lengths,
            output_size=self.total,
        )

    @cached_property
    def positions(self) -> Tensor:
        """Position of every flat element inside its segment, ``[total]``."""
        starts = repeat(self.offsets[:-1], self.lengths, self.total)
        return torch.arange(self.total, device=self.offsets.device) - starts

    @cached_property
    def last(self) -> Tensor:
        """Flat index of the last element of each segment (segments must be non-empty)."""
        return self.offsets[1:] - 1

    @cached_property
    def is_last(self) -> Tensor:
        """``[total]`` bool, true at the last element of each segment."""
        mask = torch.zeros(self.total, dtype=torch.bool, device=self.offsets.device)
        mask[self.last[self.lengths > 0]] = True
        return mask

    def block_plan(self, block: int = SCAN_BLOCK) -> _BlockPlan:
        cache: dict[int, _BlockPlan] = self.__dict__.setdefault("_block_plans", {})
        if block not in cache:
            cache[block] = _BlockPlan.build(self, block)
        return cache[block]


@dataclass(frozen=True, eq=False)
class _BlockPlan:
    """Index bookkeeping for the blocked scan over a fixed grid of ``block``-element rows.

    The flat array is viewed as rows of ``block`` elements, ignoring segment boundaries. Per row,
    an unsegmented in-row scan is one matrix product. Two things then make it segmented:

    * *closing* elements — those whose segment ends strictly inside their row, at flat position
      ``end`` — subtract ``gamma**(end - t)`` times the in-row value at ``end``, which is exactly
      the part of their sum that leaked in from later segments;
    * a row whose last segment continues into the next row gets, added to every column, the full
      value at the next row's start times ``gamma**(block - column)``. Those full values are the
      same scan one level up: over row starts, with discount ``gamma**block``, chained only while
      one segment runs through a whole row.
    """

    block: int
    num_rows: int
    closing: Tensor
    """Flat indices of elements whose segment ends strictly inside their row."""
    closing_end: Tensor
    """For each closing element, the flat index where its segment ends (the next one starts)."""
    closing_power: Tensor
    """``closing_end - closing``, the power of gamma of the leaked part."""
    first_run: Tensor
    """Per row: how many elements, from column 0, belong to the row's first segment (<= block)."""
    first_end: Tensor
    """Per row: flat index where the row's first segment ends (clamped into the grid)."""
    first_closes: Tensor
    """Per row: whether the first segment ends strictly inside the row."""
    carries: Tensor
    """Per row: whether the row's last segment continues into the next row."""
    any_carry: bool
    chains: Segments
    """Segments over rows: runs of rows whose first segment continues into the next row."""

    @staticmethod
    def build(segments: Segments, block: int) -> _BlockPlan:
        # Built from per-segment and per-row quantities only: no pass over every element.
        device = segments.offsets.device
        total = segments.total
        num_rows = -(-total // block)
        starts, ends = segments.offsets[:-1], segments.offsets[1:]
        # A segment's closing elements: from the start of the row holding its end (or from its own
        # start, if later) up to its end -- none if it ends exactly on a row boundary.
        row_of_end = torch.div(ends, block, rounding_mode="floor") * block
        low = torch.maximum(starts, row_of_end)
        counts = torch.where(ends % block != 0, ends - low, 0)
        closing, owner = expand_ranges(low, counts)
        closing_end = torch.index_select(ends, 0, owner)
        row_start = torch.arange(num_rows, device=device) * block
        first_segment = torch.searchsorted(segments.offsets, row_start, right=True) - 1
        first_end = torch.index_select(ends, 0, first_segment)
        first_run = (first_end - row_start).clamp(max=block)
        continues = first_end > row_start + block
        next_start = row_start + block
        next_segment = torch.searchsorted(segments.offsets, next_start, right=True) - 1
        mid_segment = torch.index_select(segments.offsets, 0, next_segment) != next_start
        carries = (next_start < total) & mid_segment
        breaks = torch.nonzero(~continues).squeeze(1) + 1
        chain_offsets = torch.cat([breaks.new_zeros(1), breaks])
        if int(chain_offsets[-1]) != num_rows:
            chain_offsets = torch.cat([chain_offsets, chain_offsets.new_tensor([num_rows])])
        first_closes = first_run < block
        return _BlockPlan(
            block,
            num_rows,
            closing,
            closing_end,
            closing_end - closing,
            first_run,
            (row_start + first_run).clamp(max=num_rows * block - 1),
            first_closes,
            carries,
            bool(carries.any()),
            Segments(chain_offsets),
        )


def _scan_matrix(gamma: float, block: int, like: Tensor) -> Tensor:
    """``M[s, t] = gamma**(s - t)`` for ``s >= t`` else 0: ``(x @ M)[t] = sum_{s >= t} g^(s-t) x_s``."""
    index = torch.arange(block, device=like.device)
    distance = index[:, None] - index[None, :]
    base = torch.tensor(gamma, dtype=like.dtype, device=like.device)
    powers = base ** distance.clamp(min=0).to(like.dtype)
    return torch.where(distance >= 0, powers, torch.zeros((), dtype=like.dtype, device=like.device))


def discounted_reverse_cumsum(
    x: Tensor, segments: Segments, gamma: float, block: int = SCAN_BLOCK
) -> Tensor:
    """Return-to-go inside each segment: ``y_t = sum_{s >= t, same segment} gamma**(s - t) x_s``.

    Equivalent to the backward recursion ``y_t = x_t + gamma * y_{t+1}`` (``y`` after a segment's
    end is 0), computed without a loop over time: the flat array is cut into rows of ``block``
    elements and scanned by one matrix product, then made segmented by a sparse correction and a
    carry between rows that is the same scan one level up (see :class:`_BlockPlan`; recursion depth
    ``log_block(longest segment)``). No powers of ``1/gamma`` appear, so nothing overflows; powers
    that underflow to 0 are contributions that really are negligible.

    >>> s = Segments(torch.tensor([0, 3, 4]))
    >>> discounted_reverse_cumsum(torch.tensor([1.0, 1.0, 1.0, 5.0]), s, 0.5).tolist()
    [1.75, 1.5, 1.0, 5.0]
    """
    total = segments.total
    if total == 0:
        return x.clone()
    plan = segments.block_plan(block)
    padded = plan.num_rows * block
    rows = x if padded == total else torch.cat([x, x.new_zeros(padded - total)])
    scan = rows.view(plan.num_rows, block) @ _scan_matrix(gamma, block, x)
    # gamma**k for k = 0..block, looked up by integer power instead of pow() per element.
    powers = torch.tensor(gamma, dtype=x.dtype, device=x.device) ** torch.arange(
        block + 1, device=x.device, dtype=x.dtype
    )
    if plan.any_carry:
        # Full value at each row start: the in-row value of the row's first segment (minus what
        # leaked in after that segment ends) plus, where it runs on, the next row start's value.
        cut = torch.index_select(scan.view(-1), 0, plan.first_end)
        leak = cut * torch.index_select(powers, 0, plan.first_run) * plan.first_closes
        starts = discounted_reverse_cumsum(scan[:, 0] - leak, plan.chains, gamma**block, block)
        carry = torch.zeros_like(starts)
        carry[:-1] = torch.where(plan.carries[:-1], starts[1:], 0.0)
        # Every column gets the carry (a rank-1 update); closing elements lose it again below,
        # since the in-row value at their segment's end includes it with exactly the right power.
        scan.addr_(carry, powers[1:].flip(0))
    # The product is an intermediate of ours, so it is updated in place (autograd allows it: no
    # backward formula here needs its value).
    flat = scan.view(-1)
    leaked = torch.index_select(flat, 0, plan.closing_end)
    leaked.mul_(torch.index_select(powers, 0, plan.closing_power))
    flat.index_add_(0, plan.closing, leaked, alpha=-1)
    return flat if padded == total else flat[:total]


def _segment_reduce(x: Tensor, segments: Segments, reduce: str) -> Tensor:
    """``reduce`` over each segment. Segments must be non-empty for ``max``/``min``."""
    if _numpy_ok(x) and x.ndim == 1 and segments.count > 0 and segments.nonempty:
        # NumPy's reduceat is several times faster than segment_reduce on CPU, and zero-copy here.
        ufunc = {"sum": np.add, "max": np.maximum, "min": np.minimum}[reduce]
        starts = segments.offsets[:-1].numpy()
        return torch.from_numpy(ufunc.reduceat(x.numpy(), starts))
    return torch.segment_reduce(x, reduce, offsets=segments.offsets, unsafe=True)


def segment_sum(x: Tensor, segments: Segments) -> Tensor:
    """Sum of each segment, ``[count]`` (0 for an empty segment)."""
    return _segment_reduce(x, segments, "sum")


def segment_max(x: Tensor, segments: Segments) -> Tensor:
    return _segment_reduce(x, segments, "max")


def segment_min(x: Tensor, segments: Segments) -> Tensor:
    return _segment_reduce(x, segments, "min")


def segment_mean(x: Tensor, segments: Segments) -> Tensor:
    """Mean of each segment, ``[count]``."""
    return segment_sum(x, segments) / segments.lengths.clamp(min=1).to(x.dtype)


def broadcast(per_segment: Tensor, segments: Segments) -> Tensor:
    """Repeat each segment's value over its elements: ``[count] -> [total]``."""
    if _numpy_ok(per_segment):
        # Segments are contiguous, so this is a repeat: no index tensor to read.
        return repeat(per_segment, segments.lengths, segments.total)
    return torch.index_select(per_segment, 0, segments.ids)


def previous_in_segment(x: Tensor, segments: Segments, fill: float = 0.0) -> Tensor:
    """``x_{t-1}`` inside each segment, ``fill`` at every segment's first element."""
    # Only the segment starts change: fill them by index (one write per segment), not by a
    # mask over every element.
    return torch.roll(x, 1, 0).index_fill_(0, segments.offsets[:-1][segments.lengths > 0], fill)


def next_in_segment(x: Tensor, segments: Segments, fill: Tensor | float = 0.0) -> Tensor:
    """``x_{t+1}`` inside each segment; at a segment's last element, ``fill`` (scalar or per segment)."""
    out = torch.roll(x, -1, 0)
    if isinstance(fill, Tensor):
        return out.index_copy_(0, segments.last, fill.to(x.dtype))
    return out.index_fill_(0, segments.last, fill)


@dataclass(frozen=True, eq=False)
class Groups:
    """A partition of items (trajectories, or steps) into groups given by integer labels.

    ``index`` is the dense group index of each item; ``size`` the number of items per group.
    """

    index: Tensor
    count: int

    @staticmethod
    def from_labels(labels: Tensor) -> Groups:
        unique, index = torch.unique(labels, return_inverse=True)
        return Groups(index, unique.shape[0])

    @staticmethod
    def one(items: int, device: torch.device | str | None = None) -> Groups:
        """All ``items`` in a single group (batch-wide statistics)."""
        return Groups(torch.zeros(items, dtype=torch.int64, device=device), 1)

    @cached_property
    def size(self) -> Tensor:
        return torch.bincount(self.index, minlength=self.count)

    def sum(self, x: Tensor) -> Tensor:
        return x.new_zeros(self.count, *x.shape[1:]).index_add_(0, self.index, x)

    def scale(self, x: Tensor) -> Tensor:
        """Per group, the power of two ``2^e`` with ``max |x| / 2^e`` in ``[1, 2)`` (1 for an
        all-zero or empty group).

        The statistics below are computed on ``x / 2^e``, whose entries lie in ``(-2, 2)``:
        squares and sums cannot overflow for any finite input (a reward of 1e200 in float64, or
        1e30 in float32, has an exact z-score), and dividing by a power of two is exact, so on
        ordinary values every result is bit-for-bit the unscaled formula's.
        """
        magnitude = x.abs() if x.is_floating_point() else x.abs().to(torch.get_default_dtype())
        if magnitude.ndim > 1:
            magnitude = magnitude.flatten(1).amax(1)
        peak = magnitude.new_zeros(self.count).scatter_reduce(0, self.index, magnitude, "amax")
        return power_of_two_scale(peak)

    def _scaled(self, x: Tensor) -> tuple[Tensor, Tensor]:
        scale = self.scale(x)
        per_item = scale[self.index]
        return x / per_item.view(-1, *([1] * (x.ndim - 1))), scale

    def mean(self, x: Tensor) -> Tensor:
        y, scale = self._scaled(x)
        return self._mean(y) * scale.view(-1, *([1] * (x.ndim - 1)))

    def _mean(self, y: Tensor) -> Tensor:
        return self.sum(y) / self.size.clamp(min=1).to(y.dtype).view(-1, *([1] * (y.ndim - 1)))

    def _std(self, y: Tensor, unbiased: bool) -> Tensor:
        squared = self.sum((y - self._mean(y)[self.index]) ** 2)
        dof = (self.size - int(unbiased)).to(y.dtype)
        return torch.where(dof > 0, squared / dof.clamp(min=1), torch.zeros_like(squared)).sqrt()

    def std(self, x: Tensor, unbiased: bool = True) -> Tensor:
        """Per-group standard deviation; 0 for a group too small to have one."""
        y, scale = self._scaled(x)
        return self._std(y, unbiased) * scale

    def leave_one_out_mean(self, x: Tensor) -> Tensor:
        """``mean_{j != i} x_j`` over i's group, per item; ``x_i`` itself for a group of one.

        Returning ``x_i`` for a singleton makes ``x_i - baseline`` exactly 0: a lone sample has no
        baseline, so it gets no advantage rather than an unbaselined one.
        """
        y, scale = self._scaled(x)
        total = self.sum(y)[self.index]
        others = (self.size[self.index] - 1).to(x.dtype)
        return torch.where(others > 0, (total - y) / others.clamp(min=1) * scale[self.index], x)

    def max(self, x: Tensor) -> Tensor:
        return x.new_full((self.count,), float("-inf")).scatter_reduce(0, self.index, x, "amax")

    def min(self, x: Tensor) -> Tensor:
        return x.new_full((self.count,), float("inf")).scatter_reduce(0, self.index, x, "amin")

    def is_constant(self, x: Tensor) -> Tensor:
        """Per item: whether every value in its group is equal (a group of one is constant)."""
        return (self.max(x) == self.min(x))[self.index]

    def zscore(self, x: Tensor, eps: float = 1e-6, unbiased: bool = True) -> Tensor:
        """``(x - mean_g) / (std_g + eps)`` per item; exactly 0 in a group of one or all-equal.

        Evaluated as ``(y - mean_g y) / (std_g y + eps / s_g)`` with ``y = x / s_g`` (see
        :meth:`scale`): the same number, without overflow. The constant-group case is decided by
        max == min, not by ``std == 0``: rounding in the mean leaves ``x - mean`` around 1e-8,
        which ``eps`` would blow up into a visible advantage.
        """
        y, scale = self._scaled(x)
        mean = self._mean(y)[self.index]
        std = self._std(y, unbiased)[self.index]
        scores = (y - mean) / (std + eps / scale[self.index])
        return scores.masked_fill(self.is_constant(x), 0.0)


def power_of_two_scale(magnitude: Tensor) -> Tensor:
    """``2^e`` with ``magnitude / 2^e`` in ``[1, 2)``, elementwise (for subnormal magnitudes the
    smallest normal power of two); 1 where ``magnitude`` is 0 (or not finite, which the callers'
    finiteness checks report). ``2^e`` never exceeds ``magnitude``, so it is representable even
    for the largest finite float."""
    _, exponent = torch.frexp(magnitude)
    scale = torch.ldexp(torch.ones_like(magnitude), exponent - 1)
    # never below the smallest normal number: a subnormal scale has no finite reciprocal, and
    # torch divides by a tensor through it (0 / 5e-324 would be NaN)
    scale = scale.clamp(min=torch.finfo(magnitude.dtype).tiny)
    return torch.where((magnitude > 0) & torch.isfinite(magnitude), scale, 1.0)


def pooled_zscore(
    x: Tensor, segments: Segments, groups: Groups, eps: float = 1e-6, unbiased: bool = True
) -> Tensor:
    """Z-score every element against all elements of its segment's group, ``[total]``.

    The pool of group g is the union of its segments (for steps: every step of every trajectory
    in the group). Computed through per-segment partial sums, so the only passes over ``total``
    elements are segment reductions and broadcasts — never a scatter into groups. A constant pool
    (max == min) maps to exactly 0.
    """
    high = groups.max(segment_max(x, segments))
    low = groups.min(segment_min(x, segments))
    # computed on x / s_g (a power of two near the pool's largest |x|: exact, cannot overflow)
    s = power_of_two_scale(torch.maximum(high.abs(), low.abs()))
    y = x / broadcast(s[groups.index], segments)
    count = groups.sum(segments.lengths.to(x.dtype))
    mean = groups.sum(segment_sum(y, segments)) / count.clamp(min=1)
    centred = y - broadcast(mean[groups.index], segments)
    squares = groups.sum(segment_sum(centred * centred, segments))
    dof = count - int(unbiased)
    std = torch.where(dof > 0, squares / dof.clamp(min=1), torch.zeros_like(squares)).sqrt()
    scale = torch.where(high == low, torch.zeros_like(std), 1.0 / (std + eps / s))
    return centred * broadcast(scale[groups.index], segments)


AGGREGATIONS = ("min", "product", "last", "mean", "max", "sum")


def aggregate_segments(x: Tensor, segments: Segments, how: str) -> Tensor:
    """One score per segment from its elements: ``min``, ``product``, ``last``, ``mean``, ``max``
    or ``sum`` (how a PRM's step scores become a solution score; ``product`` expects
    probabilities and is taken as ``exp(sum(log x))``, so one zero makes it zero).

    >>> s = Segments(torch.tensor([0, 2, 3]))
    >>> aggregate_segments(torch.tensor([0.5, 0.8, 0.9]), s, "product").tolist()
    [0.4000000059604645, 0.8999999761581421]
    """
    if how == "min":
        return segment_min(x, segments)
    if how == "max":
        return segment_max(x, segments)
    if how == "mean":
        return segment_mean(x, segments)
    if how == "sum":
        return segment_sum(x, segments)
    if how == "last":
        return x[segments.last]
    if how == "product":
        return torch.exp(segment_sum(torch.log(x), segments))
    raise ValueError(f"unknown aggregation {how!r}; known: {', '.join(AGGREGATIONS)}")


def first_below(x: Tensor, segments: Segments, threshold: float) -> Tensor:
    """Position (within its segment) of the first element below ``threshold``; -1 if none.

    >>> first_below(torch.tensor([0.9, 0.2, 0.1, 0.8]), Segments(torch.tensor([0, 3, 4])), 0.5)
    tensor([ 1, -1])
    """
    big = segments.max_length + 1
    positions = torch.where(
        x < threshold, segments.positions, torch.full_like(segments.positions, big)
    )
    first = torch.segment_reduce(
        positions.to(torch.float64), "min", offsets=segments.offsets, initial=float(big)
    )
    first = first.to(torch.long)
    return torch.where(first >= big, torch.full_like(first, -1), first)
