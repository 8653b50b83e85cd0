"""EPIC's canonicalisation written as the plain nested expectation."""

from __future__ import annotations

import numpy as np


def epic_canonicalize(R: np.ndarray, gamma: float) -> np.ndarray:
    S, A, _ = R.shape
    out = np.zeros_like(R)
    for s in range(S):
        for a in range(A):
            for x in range(S):
                expectation = 0.0
                for a2 in range(A):
                    for s1 in range(S):
                        for s2 in range(S):
                            expectation += (
                                gamma * R[x, a2, s2] - R[s, a2, s2] - gamma * R[s1, a2, s2]
                            ) / (A * S * S)
                out[s, a, x] = R[s, a, x] + expectation
    return out
