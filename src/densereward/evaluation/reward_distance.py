"""Distances between reward functions that ignore what cannot change optimal behaviour.

Tabular rewards are arrays ``R[s, a, s']``; transitions ``tau[s, a, s']``. Both metrics are 0 for
rewards that differ by potential shaping and positive scaling, and positive otherwise.

* EPIC (Gleave et al., 2021): canonicalise
  ``C(R)(s,a,s') = R(s,a,s') + E[gamma R(s',A,S') - R(s,A,S') - gamma R(S,A,S')]`` with
  ``S, S' ~ D_S`` and ``A ~ D_A`` independent, then ``D = sqrt((1 - rho) / 2)`` with ``rho`` the
  Pearson correlation of the canonical rewards over a coverage distribution of transitions.
* STARC (Skalse et al., 2024) with the VAL canonicalisation under a policy pi (uniform by
  default): ``c(R)(s,a) = E_{S' ~ tau(s,a)}[R(s,a,S') + gamma V^pi(S') - V^pi(s)]``, standardised
  ``s(R) = c(R) / ||c(R)||``, distance ``||s(R1) - s(R2)||`` (L1 or L2). Zero exactly for rewards
  equal up to potential shaping, S'-redistribution and positive scaling.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

RewardFunction = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""Batched ``R(obs, act, next_obs) -> [n]``, the argument order of the ``imitation`` library."""


def _uniform(n: int) -> np.ndarray:
    return np.full(n, 1.0 / n)


def epic_canonicalize(
    reward: np.ndarray,
    gamma: float,
    state_distribution: np.ndarray | None = None,
    action_distribution: np.ndarray | None = None,
) -> np.ndarray:
    """``C(R)[s, a, s']`` for a tabular reward ``[S, A, S]``.

    >>> R = np.random.default_rng(0).normal(size=(3, 2, 3))
    >>> phi = np.array([1.0, -2.0, 0.5])
    >>> shaped = R + 0.9 * phi[None, None, :] - phi[:, None, None]
    >>> bool(np.allclose(epic_canonicalize(R, 0.9), epic_canonicalize(shaped, 0.9)))
    True
    """
    states, actions, _ = reward.shape
    d_s = _uniform(states) if state_distribution is None else np.asarray(state_distribution, float)
    d_a = (
        _uniform(actions) if action_distribution is None else np.asarray(action_distribution, float)
    )
    mean_from = np.einsum("sax,a,x->s", reward, d_a, d_s)  # E[R(s, A, S')]
    overall = d_s @ mean_from  # E[R(S, A, S')]
    return reward + gamma * mean_from[None, None, :] - mean_from[:, None, None] - gamma * overall


def _pearson_distance(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> float:
    weights = weights / weights.sum()
    x = x - weights @ x
    y = y - weights @ y
    denominator = np.sqrt((weights @ (x * x)) * (weights @ (y * y)))
    if denominator == 0:
        return 0.0 if np.allclose(x, 0) and np.allclose(y, 0) else float(np.sqrt(0.5))
    rho = float(np.clip((weights @ (x * y)) / denominator, -1.0, 1.0))
    return float(np.sqrt((1.0 - rho) / 2.0))


def epic_distance(
    reward_a: np.ndarray,
    reward_b: np.ndarray,
    gamma: float,
    coverage: np.ndarray | None = None,
    state_distribution: np.ndarray | None = None,
    action_distribution: np.ndarray | None = None,
) -> float:
    """Tabular EPIC distance in ``[0, 1]``; ``coverage[s, a, s']`` weights transitions (uniform)."""
    ca = epic_canonicalize(reward_a, gamma, state_distribution, action_distribution)
    cb = epic_canonicalize(reward_b, gamma, state_distribution, action_distribution)
    weights = np.ones(ca.size) if coverage is None else np.asarray(coverage, float).reshape(-1)
    return _pearson_distance(ca.reshape(-1), cb.reshape(-1), weights)


def epic_distance_sampled(
    reward_a: RewardFunction,
    reward_b: RewardFunction,
    transitions: tuple[np.ndarray, np.ndarray, np.ndarray],
    states: np.ndarray,
    actions: np.ndarray,
    gamma: float,
    state_weights: np.ndarray | None = None,
    action_weights: np.ndarray | None = None,
    transition_weights: np.ndarray | None = None,
) -> float:
    """EPIC from samples: reward functions are evaluated on transitions ``(obs, act, next_obs)``
    and on every (state, action, state) combination of the samples ``states`` x ``actions`` x
    ``states`` (with optional weights) for the expectations. With every state and action as
    samples and the matching weights it equals :func:`epic_distance`."""
    obs, act, next_obs = transitions
    w_s = _uniform(len(states)) if state_weights is None else state_weights / state_weights.sum()
    w_a = (
        _uniform(len(actions)) if action_weights is None else action_weights / action_weights.sum()
    )

    def canonical(reward: RewardFunction) -> np.ndarray:
        def mean_from(origins: np.ndarray) -> np.ndarray:
            n, k, m = len(origins), len(actions), len(states)
            o = np.repeat(origins, k * m, axis=0)
            a = np.tile(np.repeat(actions, m, axis=0), (n,) + (1,) * (actions.ndim - 1))
            x = np.tile(states, (n * k,) + (1,) * (states.ndim - 1))
            values = reward(o, a, x).reshape(n, k, m)
            return np.einsum("nkm,k,m->n", values, w_a, w_s)

        overall = w_s @ mean_from(states)
        return (
            reward(obs, act, next_obs)
            + gamma * mean_from(next_obs)
            - mean_from(obs)
            - gamma * overall
        )

    weights = (
        np.ones(len(obs)) if transition_weights is None else np.asarray(transition_weights, float)
    )
    return _pearson_distance(canonical(reward_a), canonical(reward_b), weights)


def _policy_values(
    reward: np.ndarray, transition: np.ndarray, gamma: float, policy: np.ndarray
) -> np.ndarray:
    states = reward.shape[0]
    expected = np.einsum("sax,sax->sa", transition, reward)
    r_pi = np.einsum("sa,sa->s", policy, expected)
    p_pi = np.einsum("sa,sax->sx", policy, transition)
    return np.linalg.solve(np.eye(states) - gamma * p_pi, r_pi)


def starc_canonicalize(
    reward: np.ndarray, transition: np.ndarray, gamma: float, policy: np.ndarray | None = None
) -> np.ndarray:
    """VAL canonicalisation ``c(R)[s, a]`` (requires ``gamma < 1``)."""
    states, actions, _ = reward.shape
    policy = np.full((states, actions), 1.0 / actions) if policy is None else policy
    values = _policy_values(reward, transition, gamma, policy)
    return (
        np.einsum("sax,sax->sa", transition, reward + gamma * values[None, None, :])
        - values[:, None]
    )


def _standardise(canonical: np.ndarray, order: int) -> np.ndarray:
    norm = np.linalg.norm(canonical.reshape(-1), ord=order)
    return canonical / norm if norm > 1e-12 else np.zeros_like(canonical)


def starc_distance(
    reward_a: np.ndarray,
    reward_b: np.ndarray,
    transition: np.ndarray,
    gamma: float,
    order: int = 2,
    policy: np.ndarray | None = None,
) -> float:
    """Tabular STARC distance in ``[0, 2]`` with the VAL canonicalisation and an L1/L2 norm."""
    sa = _standardise(starc_canonicalize(reward_a, transition, gamma, policy), order)
    sb = _standardise(starc_canonicalize(reward_b, transition, gamma, policy), order)
    return float(np.linalg.norm((sa - sb).reshape(-1), ord=order))


def lstd_values(
    features: np.ndarray,
    next_features: np.ndarray,
    rewards: np.ndarray,
    terminal: np.ndarray,
    gamma: float,
    ridge: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares TD fit of ``V(s) = phi(s) . w`` on sampled transitions (one solve, no loop).

    Returns ``(V(s), V(s'))`` for every sample, with ``V(s') = 0`` where ``terminal``.
    """
    following = np.where(terminal[:, None], 0.0, next_features)
    a = features.T @ (features - gamma * following) + ridge * np.eye(features.shape[1])
    w = np.linalg.solve(a, features.T @ rewards)
    return features @ w, following @ w


def starc_distance_rollouts(
    rewards_a: np.ndarray,
    rewards_b: np.ndarray,
    features: np.ndarray,
    next_features: np.ndarray,
    terminal: np.ndarray,
    gamma: float,
    order: int = 2,
) -> float:
    """STARC on collected rollouts: per transition, ``c = r + gamma V(s') - V(s)`` with ``V``
    fitted by LSTD for each reward under the behaviour policy; then standardise and compare.

    With one-hot state features, deterministic transitions and every transition sampled once,
    this is the tabular STARC distance under the behaviour policy.
    """

    def standardised(rewards: np.ndarray) -> np.ndarray:
        value, next_value = lstd_values(features, next_features, rewards, terminal, gamma)
        return _standardise(rewards + gamma * next_value - value, order)

    return float(np.linalg.norm(standardised(rewards_a) - standardised(rewards_b), ord=order))


def rollout_distance_matrix(
    batch, names: list[str], features: str, gamma: float, order: int = 2
) -> np.ndarray:
    """Pairwise rollout-STARC distances between step reward columns of a ``Trajectories`` batch.

    ``names`` are distinct step columns of one number per step; ``features`` is a step column of
    state features (flattened); ``s'`` of a trajectory's last step comes from the per-trajectory
    column ``final_<features>`` (as many features) unless it terminated. Non-finite values were
    refused when the batch was built.
    """
    import torch

    from densereward.core.errors import ValidationError
    from densereward.core.segments import next_in_segment

    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValidationError(f"steps.{repeated[0]}", "named twice among the rewards to compare")
    rewards = []
    for name in names:
        column = batch.step(name)
        if column.ndim != 1:
            raise ValidationError(
                f"steps.{name}",
                f"a reward must be one number per step, got {list(column.shape[1:])}",
            )
        rewards.append(column.to(torch.float64).numpy())
    phi = batch.step(features).reshape(batch.num_steps, -1).to(torch.float64)
    terminated = batch.terminated
    final_name = f"final_{features}"
    if final_name in batch.episodes:
        final = batch.episodes[final_name].reshape(len(batch), -1).to(torch.float64)
        if final.shape[1] != phi.shape[1]:
            raise ValidationError(
                final_name,
                f"has {final.shape[1]} features per trajectory, {features} has {phi.shape[1]}",
            )
    elif bool(terminated.all()):
        final = torch.zeros(len(batch), phi.shape[1], dtype=torch.float64)
    else:
        first = int(torch.nonzero(~terminated)[0, 0])
        raise ValidationError(
            final_name, "needed for trajectories that did not terminate", trajectory=first
        )
    following = next_in_segment(phi, batch.segments, final)  # whole feature rows at once
    terminal = torch.zeros(batch.num_steps, dtype=torch.bool)
    terminal[batch.segments.last] = terminated  # one write per trajectory
    matrix = np.zeros((len(names), len(names)))
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            matrix[i, j] = matrix[j, i] = starc_distance_rollouts(
                rewards[i],
                rewards[j],
                phi.numpy(),
                following.numpy(),
                terminal.numpy(),
                gamma,
                order,
            )
    return matrix


def demo_rewards(states: int, actions: int, gamma: float, seed: int):
    """A random tabular MDP and rewards related to its true reward in known ways: potential-shaped,
    shaped and scaled, shaped plus zero-mean noise over s' (S'-redistribution), true plus noise,
    negated, and an unrelated random reward."""
    rng = np.random.default_rng(seed)
    transition = rng.dirichlet(np.ones(states), size=(states, actions))
    true = rng.normal(size=(states, actions, states))
    phi = rng.normal(scale=3.0, size=states)
    shaped = true + gamma * phi[None, None, :] - phi[:, None, None]
    noise = rng.normal(size=true.shape)
    noise -= np.einsum("sax,sax->sa", transition, noise)[:, :, None]
    rewards = {
        "true": true,
        "shaped": shaped,
        "5*shaped": 5.0 * shaped,
        "shaped+S'": shaped + noise,
        "noisy": true + rng.normal(scale=0.5, size=true.shape),
        "negated": -true,
        "random": rng.normal(size=true.shape),
    }
    return transition, rewards
