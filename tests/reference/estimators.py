"""Slow, obvious estimators: Python loops over trajectories and steps, NumPy float64.

These mirror the formulas in the docstrings line by line and share no code with the library.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from densereward import Trajectories


def _lists(batch: Trajectories, name: str) -> list[np.ndarray]:
    return [e.numpy().astype(float) for e in batch.to_episodes(name)]


def _outcome(batch: Trajectories) -> np.ndarray:
    return batch.outcome.numpy() if batch.outcome is not None else np.zeros(len(batch))


def _group_members(batch: Trajectories) -> dict[int, list[int]]:
    members = defaultdict(list)
    for i, g in enumerate(batch.episodes["group"].tolist()):
        members[g].append(i)
    return members


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    out, running = np.zeros_like(rewards), 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        out[t] = running
    return out


def gae(batch: Trajectories, gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    advantages, returns = [], []
    outcome = _outcome(batch)
    for i, (r, v) in enumerate(zip(_lists(batch, "reward"), _lists(batch, "value"), strict=True)):
        r = r.copy()
        r[-1] += outcome[i]
        terminated = bool(batch.terminated[i])
        last_next = 0.0 if terminated else float(batch.episodes["bootstrap_value"][i])
        a, running = np.zeros_like(r), 0.0
        for t in reversed(range(len(r))):
            next_value = v[t + 1] if t + 1 < len(r) else last_next
            delta = r[t] + gamma * next_value - v[t]
            running = delta + gamma * lam * running
            a[t] = running
        advantages.append(a)
        returns.append(a + v)
    return np.concatenate(advantages), np.concatenate(returns)


def scores(batch: Trajectories, reward: str | None = "reward") -> np.ndarray:
    out = _outcome(batch).copy()
    if reward is not None and reward in batch.steps:
        out += np.array([r.sum() for r in _lists(batch, reward)])
    return out


def _broadcast(per_trajectory, batch: Trajectories) -> np.ndarray:
    return np.concatenate(
        [np.full(int(n), x) for x, n in zip(per_trajectory, batch.lengths, strict=True)]
    )


def grpo(batch: Trajectories, scale: bool = True, eps: float = 1e-6) -> np.ndarray:
    s = scores(batch)
    adv = np.zeros(len(batch))
    for members in _group_members(batch).values():
        values = s[members]
        if len(members) == 1 or np.all(values == values[0]):
            continue
        centred = values - values.mean()
        adv[members] = centred / (values.std(ddof=1) + eps) if scale else centred
    return _broadcast(adv, batch)


def rloo(batch: Trajectories) -> np.ndarray:
    s = scores(batch)
    adv = np.zeros(len(batch))
    for members in _group_members(batch).values():
        for i in members:
            others = [s[j] for j in members if j != i]
            adv[i] = s[i] - np.mean(others) if others else 0.0
    return _broadcast(adv, batch)


def reinforce_pp(batch: Trajectories, kl_coef: float, gamma: float) -> np.ndarray:
    outcome = _outcome(batch)
    returns = []
    for i, (r, kl) in enumerate(zip(_lists(batch, "reward"), _lists(batch, "kl"), strict=True)):
        r = r - kl_coef * kl
        r[-1] += outcome[i]
        returns.append(discounted_returns(r, gamma))
    g = np.concatenate(returns)
    return (g - g.mean()) / (g.std(ddof=1) + 1e-8) if g.size > 1 else g - g.mean()


def zscore_within_groups(
    batch: Trajectories, per_trajectory: list[np.ndarray], one_group: bool = False
) -> list[np.ndarray]:
    """Each trajectory's values z-scored against every value of its group's trajectories (of the
    whole batch with ``one_group``)."""
    out = [np.zeros(0)] * len(per_trajectory)
    members = {0: list(range(len(batch)))} if one_group else _group_members(batch)
    for group in members.values():
        pool = np.concatenate([per_trajectory[i] for i in group])
        constant = np.all(pool == pool[0])
        std = pool.std(ddof=1) if pool.size > 1 else 0.0
        for i in group:
            centred = per_trajectory[i] - pool.mean()
            out[i] = np.zeros_like(centred) if constant else centred / (std + 1e-6)
    return out


def step_grpo(
    batch: Trajectories, process: str, outcome_weight: float, gamma: float, scope: str = "group"
) -> np.ndarray:
    members = _group_members(batch)
    normalized = zscore_within_groups(batch, _lists(batch, process), one_group=scope == "batch")
    process_part = np.concatenate([discounted_returns(n, gamma) for n in normalized])
    if batch.outcome is None:
        return process_part
    outcome = _outcome(batch)
    adv = np.zeros(len(batch))
    for group in members.values():
        values = outcome[group]
        if len(group) > 1 and not np.all(values == values[0]):
            adv[group] = (values - values.mean()) / (values.std(ddof=1) + 1e-6)
    return process_part + outcome_weight * _broadcast(adv, batch)


def prime(batch: Trajectories, process: str, gamma: float) -> np.ndarray:
    rewards = _lists(batch, process)
    outcome = _outcome(batch)
    members = _group_members(batch)
    out = []
    for i, r in enumerate(rewards):
        group = members[int(batch.episodes["group"][i])]
        others = [j for j in group if j != i]
        baseline = np.mean([rewards[j].mean() for j in others]) if others else r.mean()
        outcome_baseline = np.mean([outcome[j] for j in others]) if others else outcome[i]
        centred = r - baseline if others else np.zeros_like(r)
        out.append(discounted_returns(centred, gamma) + (outcome[i] - outcome_baseline))
    return np.concatenate(out)


def igpo(batch: Trajectories, gamma: float, normalize: str) -> np.ndarray:
    gains = _lists(batch, "prm")
    outcome = _outcome(batch)
    rewards = []
    for i, g in enumerate(gains):
        r = g.copy()
        r[-1] = outcome[i]
        rewards.append(r)
    if normalize == "returns":
        return np.concatenate(
            zscore_within_groups(batch, [discounted_returns(r, gamma) for r in rewards])
        )
    return np.concatenate(
        [discounted_returns(n, gamma) for n in zscore_within_groups(batch, rewards)]
    )


def fork_relative(batch: Trajectories, fork_weight: float, eps: float = 1e-6) -> np.ndarray:
    """Walk every trajectory's path through parent pointers; average over trajectories per step."""
    parent = batch.parent.tolist()
    offsets = batch.offsets.tolist()
    reward = batch.steps["reward"].tolist()
    outcome = _outcome(batch)
    paths = []
    for i in range(len(batch)):
        own = list(range(offsets[i], offsets[i + 1]))
        ancestors, node = [], parent[own[0]]
        while node != -1:
            ancestors.append(node)
            node = parent[node]
        paths.append(ancestors[::-1] + own)
    total = np.array([outcome[i] + sum(reward[s] for s in path) for i, path in enumerate(paths)])
    z = np.zeros(len(batch))
    for group in _group_members(batch).values():
        values = total[group]
        if len(group) > 1 and not np.all(values == values[0]):
            z[group] = (values - values.mean()) / (values.std(ddof=1) + eps)
    through = defaultdict(list)
    for i, path in enumerate(paths):
        for s in path:
            through[s].append(i)
    n = batch.num_steps
    value = np.array([np.mean(total[through[s]]) for s in range(n)])
    mean_z = np.array([np.mean(z[through[s]]) for s in range(n)])
    group_of = batch.episodes["group"].tolist()
    step_group = [group_of[i] for i in range(len(batch)) for _ in range(offsets[i], offsets[i + 1])]
    siblings = defaultdict(list)
    for s in range(n):
        siblings[parent[s] if parent[s] >= 0 else ("root", step_group[s])].append(s)
    fork = np.zeros(n)
    for members in siblings.values():
        if len(members) > 1:
            for s in members:
                fork[s] = value[s] - np.mean(value[members])
    return mean_z + fork_weight * fork


def prof_keep(batch: Trajectories, process: str, keep: int, threshold: float) -> np.ndarray:
    """Per group: sort correct responses by mean process reward, best first, incorrect ones
    worst first; take as equal a share of each as the group allows, ``min(keep, n)`` in all."""
    values = [v.mean() for v in _lists(batch, process)]
    correct = _outcome(batch) > threshold
    out = np.zeros(len(batch), dtype=bool)
    for members in _group_members(batch).values():
        good = sorted((i for i in members if correct[i]), key=lambda i: -values[i])
        bad = sorted((i for i in members if not correct[i]), key=lambda i: values[i])
        total = min(keep, len(members))
        take_good = total // 2
        take_good = max(take_good, total - len(bad))  # not enough incorrect: more correct
        take_good = min(take_good, len(good))
        for i in good[:take_good] + bad[: total - take_good]:
            out[i] = True
    return out
