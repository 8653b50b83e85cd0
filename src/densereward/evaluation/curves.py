"""Reading learning curves: trailing means and the first point a curve reaches a target."""

from __future__ import annotations

import numpy as np


def trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the non-NaN values among the last ``window`` points, at every point.

    Where the window holds none (early updates that finished no episode), the previous point's
    value is carried forward (NaN before the first).

    >>> trailing_mean(np.array([np.nan, 1.0, np.nan, 3.0, np.nan, np.nan, np.nan]), 2).tolist()
    [nan, 1.0, 1.0, 3.0, 3.0, 3.0, 3.0]
    """
    values = np.asarray(values, dtype=float)
    if window <= 1 or values.size == 0:
        return values.copy()
    padded = np.concatenate([np.full(window - 1, np.nan), values])
    windows = np.lib.stride_tricks.sliding_window_view(padded, window)
    present = ~np.isnan(windows)
    count = present.sum(1)
    total = np.where(present, windows, 0.0).sum(1)
    out = np.divide(total, count, out=np.full(values.shape, np.nan), where=count > 0)
    # carry the last defined value forward over windows with no value at all
    last = np.maximum.accumulate(np.where(count > 0, np.arange(values.size), -1))
    return np.where(last >= 0, out[np.maximum(last, 0)], np.nan)


def first_reaching(progress: np.ndarray, values: np.ndarray, target: float) -> float:
    """The progress value (steps, samples) of the first point at or above ``target``; ``inf``
    if none does.

    >>> first_reaching(np.array([10, 20, 30]), np.array([0.1, 0.5, 0.9]), 0.5)
    20.0
    """
    hit = np.flatnonzero(np.asarray(values, dtype=float) >= target)
    return float(progress[hit[0]]) if hit.size else float("inf")
