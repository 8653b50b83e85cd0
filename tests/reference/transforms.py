"""Slow, obvious transforms: loops over trajectories and steps, NumPy float64, no library code."""

from __future__ import annotations

import math

import numpy as np


def shape_potential(rewards, potentials, terminated, final_potential, gamma):
    """Per-trajectory lists in, lists out: r + gamma * Phi(next) - Phi(s), Phi(terminal) = 0."""
    out = []
    for r, phi, done, final in zip(rewards, potentials, terminated, final_potential, strict=True):
        shaped = np.empty(len(r))
        for t in range(len(r)):
            following = phi[t + 1] if t + 1 < len(r) else (0.0 if done else final)
            shaped[t] = r[t] + gamma * following - phi[t]
        out.append(shaped)
    return out


def clip(rewards, eta):
    return [np.array([min(x - eta, 0.0) for x in r]) for r in rewards]


def delta(rewards):
    return [
        np.array([r[k] - r[k + 1] if k + 1 < len(r) else r[k] for k in range(len(r))])
        for r in rewards
    ]


def return_decomposition(predictions, returns, max_error):
    out = []
    for g, total in zip(predictions, returns, strict=True):
        error = total - g[-1]
        if max_error is not None and abs(error) > max_error:
            shaped = np.zeros(len(g))
            shaped[-1] = total
        else:
            shaped = np.array([g[t] - (g[t - 1] if t else 0.0) for t in range(len(g))])
            shaped[-1] += error
        out.append(shaped)
    return out


def redistribute(weights, returns):
    out = []
    for w, total in zip(weights, returns, strict=True):
        w = np.maximum(w, 0.0)
        w = np.ones(len(w)) if w.sum() <= 0 else w
        out.append(total * w / w.sum())
    return out


def par(rewards, references, k):
    return np.array(
        [
            np.mean([1 / (1 + math.exp(-k * (r - ref))) for ref in refs])
            for r, refs in zip(rewards, references, strict=True)
        ]
    )


def log_sigmoid(rewards, references):
    return np.array(
        [-math.log1p(math.exp(-(r - ref))) for r, ref in zip(rewards, references, strict=True)]
    )


def gate(low, high, threshold):
    return [r if h >= threshold else np.zeros(len(r)) for r, h in zip(low, high, strict=True)]


def trust(thinking, correct, groups):
    weights = np.ones(len(thinking))
    for g in set(groups):
        members = [i for i, x in enumerate(groups) if x == g]
        right = [thinking[i] for i in members if correct[i]]
        wrong = [thinking[i] for i in members if not correct[i]]
        if right and wrong and np.mean(right) < np.mean(wrong):
            for i in members:
                weights[i] = math.exp(np.mean(right) - np.mean(wrong))
    return weights
