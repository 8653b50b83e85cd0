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


def laser(lengths, correct, budgets, alpha):
    """alpha for a correct response no longer than its budget (one budget, or one per response)."""
    if np.ndim(budgets) == 0:
        budgets = [budgets] * len(lengths)
    return np.array(
        [
            alpha if right and length <= budget else 0.0
            for length, right, budget in zip(lengths, correct, budgets, strict=True)
        ]
    )


def laser_d_budgets(lengths, correct, groups, thresholds, expected_correct, candidates=None):
    """LASER-D budgets from the expected-correct-responses definition, candidate by candidate."""
    accuracy = {
        g: np.mean([correct[i] for i in range(len(groups)) if groups[i] == g]) for g in set(groups)
    }
    level = {g: sum(1 for t in thresholds if t < a) for g, a in accuracy.items()}
    budget_of_level = {}
    for d in set(level.values()):
        prompts = sum(1 for g in level if level[g] == d)
        members = [i for i in range(len(groups)) if level[groups[i]] == d]
        options = sorted(set(lengths)) if candidates is None else list(candidates)
        chosen = math.inf if candidates is None else options[-1]
        for option in options:
            within = sum(1 for i in members if correct[i] and lengths[i] <= option)
            if within >= expected_correct * prompts:
                chosen = option
                break
        budget_of_level[d] = float(chosen)
    return np.array([budget_of_level[level[g]] for g in groups])


def vsrm(probabilities, initial, window, gamma):
    """r_k = sum_{j=k}^{min(k+W-1, K-1)} gamma^(j-k) (p_j - p_{j-1}), p_{-1} = initial."""
    out = []
    for p, p0 in zip(probabilities, initial, strict=True):
        before = [p0, *p[:-1]]
        change = [p[j] - before[j] for j in range(len(p))]
        out.append(
            np.array(
                [
                    sum(gamma ** (j - k) * change[j] for j in range(k, min(k + window, len(p))))
                    for k in range(len(p))
                ]
            )
        )
    return out


def conciseness(lengths, correct, groups, alpha, eps):
    """-alpha * sigmoid(z) for correct responses, z the length z-score among the group's correct."""
    out = np.zeros(len(lengths))
    for i in range(len(lengths)):
        if not correct[i]:
            continue
        siblings = [
            lengths[j] for j in range(len(lengths)) if groups[j] == groups[i] and correct[j]
        ]
        z = (lengths[i] - np.mean(siblings)) / (np.std(siblings) + eps)
        out[i] = -alpha / (1.0 + math.exp(-z))
    return out


def lagrangian_returns(objective, constraints, multipliers, thresholds):
    """Per trajectory R_0 - sum_k lambda_k (R_k - tau_k) from per-trajectory returns."""
    return np.array(
        [
            r0
            - sum(
                m * (rk[i] - t)
                for m, rk, t in zip(multipliers, constraints, thresholds, strict=True)
            )
            for i, r0 in enumerate(objective)
        ]
    )


def dual_ascent(multipliers, values, thresholds, learning_rate, maximum=None):
    out = []
    for m, v, t in zip(multipliers, values, thresholds, strict=True):
        stepped = max(m + learning_rate * (v - t), 0.0)
        out.append(stepped if maximum is None else min(stepped, maximum))
    return out
