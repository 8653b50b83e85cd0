"""Redistribution, PAR, log-sigmoid, gating, trust, annealing, combination, normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from densereward import Trajectories
from densereward.core.registry import build
from densereward.core.returns import trajectory_scores
from densereward.core.segments import Groups, segment_sum
from densereward.transforms import (
    anneal_weight,
    log_sigmoid_centre,
    preference_as_reward,
    trust_weights,
)
from tests.reference import transforms as reference
from tests.strategies import batches, episodes_of


def apply(spec: dict, batch: Trajectories, iteration: int = 0) -> Trajectories:
    return build("transform", spec)(batch, iteration)


@given(batches(), st.sampled_from([None, 0.1, 10.0]))
def test_return_decomposition_sums_exactly_to_the_return(batch: Trajectories, max_error) -> None:
    returns = trajectory_scores(batch, "reward")
    out = apply(
        {"kind": "return_decomposition", "prediction": "prm", "max_error": max_error}, batch
    )
    torch.testing.assert_close(segment_sum(out.step("reward"), batch.segments), returns)
    assert out.outcome is not None and bool((out.outcome == 0).all())
    # Each trajectory is either the prediction differences or, gated, sparse: G at the last step.
    expected = reference.return_decomposition(
        episodes_of(batch, "prm"), returns.tolist(), max_error
    )
    np.testing.assert_allclose(
        out.step("reward").numpy(), np.concatenate(expected), rtol=1e-12, atol=1e-12
    )


@given(batches())
def test_weighted_redistribution_is_proportional_and_exact(batch: Trajectories) -> None:
    returns = trajectory_scores(batch, "reward")
    out = apply({"kind": "redistribute", "weights": "weight"}, batch)
    torch.testing.assert_close(segment_sum(out.step("reward"), batch.segments), returns)
    for i, (shaped, w) in enumerate(
        zip(out.to_episodes("reward"), batch.to_episodes("weight"), strict=True)
    ):
        torch.testing.assert_close(shaped, returns[i] * w / w.sum())


def test_uniform_redistribution() -> None:
    batch = Trajectories.from_episodes({"reward": [[0.0, 0.0, 0.0, 0.0]]}, {"outcome": [2.0]})
    out = apply({"kind": "redistribute"}, batch)
    torch.testing.assert_close(out.step("reward"), torch.full((4,), 0.5, dtype=torch.float64))


@given(st.lists(st.floats(-5, 5), min_size=1, max_size=5), st.floats(0.1, 5))
def test_par_matches_definition_and_is_bounded(references, k) -> None:
    reward = torch.tensor([0.3], dtype=torch.float64)
    refs = torch.tensor([references], dtype=torch.float64)
    value = preference_as_reward(reward, refs, k).item()
    assert value == pytest.approx(reference.par([0.3], [references], k)[0], rel=1e-12)
    assert 0.0 < value < 1.0


def test_log_sigmoid_is_bounded_concave_and_centred() -> None:
    r = torch.linspace(-10, 10, 201, dtype=torch.float64)
    u = log_sigmoid_centre(r, torch.zeros_like(r))
    assert bool((u < 0).all())
    assert bool((torch.diff(u, 2) < 0).all())  # concave: diminishing returns for hacking
    assert u[100].item() == pytest.approx(math.log(0.5))


@given(batches(), st.floats(-1, 2))
def test_gate_keeps_low_rewards_only_above_threshold(batch: Trajectories, threshold) -> None:
    out = apply({"kind": "gate", "source": "prm", "gate": "outcome", "threshold": threshold}, batch)
    for i, (shaped, raw) in enumerate(
        zip(out.to_episodes("prm"), batch.to_episodes("prm"), strict=True)
    ):
        open_gate = float(batch.outcome[i]) >= threshold
        torch.testing.assert_close(shaped, raw if open_gate else torch.zeros_like(raw))


@given(st.integers(0, 2**31))
def test_trust_weight_matches_sophiavl_definition(seed) -> None:
    rng = np.random.default_rng(seed)
    n = 12
    labels = rng.integers(0, 3, size=n)
    thinking, correct = rng.uniform(size=n), rng.random(n) < 0.5
    weights = trust_weights(
        torch.from_numpy(thinking),
        torch.from_numpy(correct),
        Groups.from_labels(torch.from_numpy(labels)),
    ).numpy()
    for i in range(n):
        members = labels == labels[i]
        right, wrong = thinking[members & correct], thinking[members & ~correct]
        if right.size and wrong.size and right.mean() < wrong.mean():
            expected = math.exp(right.mean() - wrong.mean())
        else:
            expected = 1.0
        assert weights[i] == pytest.approx(expected, rel=1e-12)


def test_anneal_schedules() -> None:
    assert anneal_weight(0, "exponential", 1.0, 0.0, 10) == 1.0
    assert anneal_weight(10, "exponential", 1.0, 0.0, 10) == pytest.approx(math.exp(-1))
    assert anneal_weight(5, "cosine", 1.0, 0.0, 10) == pytest.approx(0.5)
    assert anneal_weight(100, "linear", 2.0, 1.0, 10) == 1.0
    batch = Trajectories.from_episodes({"reward": [[2.0]]})
    out = apply({"kind": "anneal", "schedule": "linear", "horizon": 4}, batch, iteration=1)
    assert out.step("reward").item() == pytest.approx(1.5)


@given(batches())
def test_combine_is_the_weighted_sum_and_moves_the_outcome(batch: Trajectories) -> None:
    out = apply({"kind": "combine", "weights": {"prm": 0.5, "reward": 2.0, "outcome": 1.0}}, batch)
    expected = 0.5 * batch.step("prm") + 2.0 * batch.step("reward")
    expected = expected.index_add(0, batch.segments.last, batch.outcome)
    torch.testing.assert_close(out.step("reward"), expected)
    # The outcome moved into the steps: the trajectory's total reward is unchanged in meaning.
    torch.testing.assert_close(
        trajectory_scores(out, "reward"), segment_sum(expected, batch.segments)
    )


@given(batches())
def test_normalize_group_and_batch(batch: Trajectories) -> None:
    out = apply({"kind": "normalize", "source": "outcome", "scope": "batch"}, batch)
    outcome = batch.outcome.numpy()
    if np.all(outcome == outcome[0]):
        assert bool((out.outcome == 0).all())
    else:
        expected = (outcome - outcome.mean()) / (outcome.std(ddof=1) + 1e-6)
        np.testing.assert_allclose(out.outcome.numpy(), expected, rtol=1e-9)
    grouped = (
        apply({"kind": "normalize", "source": "prm", "scope": "group"}, batch).step("prm").numpy()
    )
    groups = batch.episodes["group"].numpy()[batch.segments.ids.numpy()]
    prm = batch.step("prm").numpy()
    for g in np.unique(groups):
        pool = prm[groups == g]
        if pool.size > 1 and not np.all(pool == pool[0]):
            np.testing.assert_allclose(
                grouped[groups == g], (pool - pool.mean()) / (pool.std(ddof=1) + 1e-6), rtol=1e-9
            )


@given(
    st.lists(st.floats(-5, 5), min_size=1, max_size=8),
    st.lists(st.floats(-5, 5), min_size=8, max_size=8),
)
def test_log_sigmoid_matches_reference(rewards, references) -> None:
    refs = references[: len(rewards)]
    out = log_sigmoid_centre(
        torch.tensor(rewards, dtype=torch.float64), torch.tensor(refs, dtype=torch.float64)
    )
    np.testing.assert_allclose(
        out.numpy(), reference.log_sigmoid(rewards, refs), rtol=1e-9, atol=1e-12
    )
