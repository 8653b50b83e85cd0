"""Every estimator against its slow reference (tests/reference/estimators.py), on hypothesis
batches: singleton groups, length-1 episodes, all-equal rewards, every termination status."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from densereward import Trajectories
from densereward.estimators import (
    estimate_fork_relative,
    estimate_gae,
    estimate_grpo,
    estimate_igpo,
    estimate_prime,
    estimate_prof,
    estimate_reinforce_pp,
    estimate_rloo,
    estimate_step_grpo,
    policy_loss_weights,
    prof_keep,
)
from tests.reference import estimators as reference
from tests.strategies import batches, trees

gammas = st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0])


def close(actual: torch.Tensor, expected: np.ndarray) -> None:
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-9, atol=1e-9)


@given(batches(long=True), gammas, st.sampled_from([0.0, 0.95, 1.0]))
def test_gae_matches_loop_reference(batch: Trajectories, gamma: float, lam: float) -> None:
    estimate = estimate_gae(batch, gamma=gamma, lam=lam)
    advantages, returns = reference.gae(batch, gamma, lam)
    close(estimate.advantages, advantages)
    close(estimate.returns, returns)


@pytest.mark.parametrize("cut", range(1, 7))
def test_gae_bootstraps_on_truncation_at_every_position(cut: int) -> None:
    # One 6-step episode of reward 1 and value 0, truncated after `cut` steps, then bootstrapped
    # from V(s_cut) = 5: the last advantage must include gamma * 5; terminated, it must not.
    rewards, values = [1.0] * cut, [0.0] * cut
    for terminated, expected_tail in ((False, 1.0 + 0.9 * 5.0), (True, 1.0)):
        batch = Trajectories.from_episodes(
            {"reward": [rewards], "value": [values]},
            {"terminated": [terminated], "truncated": [not terminated], "bootstrap_value": [5.0]},
        )
        advantages = estimate_gae(batch, gamma=0.9, lam=1.0).advantages
        assert advantages[-1].item() == pytest.approx(expected_tail)
        discount = 0.9 ** np.arange(cut)[::-1]
        head = 1.0 * (1 - 0.9 ** (cut - np.arange(cut))) / (1 - 0.9)
        expected = head + (0.0 if terminated else 5.0 * 0.9 * discount)
        np.testing.assert_allclose(advantages.numpy(), expected, rtol=1e-12)


@given(batches())
def test_grpo_and_dr_grpo_match_reference(batch: Trajectories) -> None:
    close(estimate_grpo(batch).advantages, reference.grpo(batch))
    close(estimate_grpo(batch, scale="none").advantages, reference.grpo(batch, scale=False))


@given(batches(equal_rewards=True))
def test_group_estimators_give_exact_zero_on_all_equal_groups(batch: Trajectories) -> None:
    # All-equal groups carry no signal: zero advantage, never NaN (std = 0) or 1e-2 noise.
    for estimate in (
        estimate_grpo(batch),
        estimate_grpo(batch, scale="none"),
        estimate_rloo(batch),
    ):
        same_length = batch.lengths == batch.lengths[0]
        if bool(same_length.all()):
            assert torch.equal(estimate.advantages, torch.zeros_like(estimate.advantages))
        assert bool(torch.isfinite(estimate.advantages).all())


def test_singleton_group_gets_zero_advantage_and_no_nan() -> None:
    batch = Trajectories.from_episodes({"reward": [[1.0, 2.0]]}, {"outcome": [1.0], "group": [0]})
    # No baseline exists for a lone response: the group-relative estimators give it nothing.
    for estimate in (
        estimate_grpo(batch),
        estimate_rloo(batch),
        estimate_prime(batch, process="reward"),
    ):
        assert torch.equal(estimate.advantages, torch.zeros(2, dtype=torch.float64))
    # Step-pooled estimators still compare the response's own steps, and must stay finite.
    for estimate in (estimate_step_grpo(batch), estimate_igpo(batch, information_gain="reward")):
        assert bool(torch.isfinite(estimate.advantages).all())


@given(batches())
def test_rloo_matches_reference(batch: Trajectories) -> None:
    close(estimate_rloo(batch).advantages, reference.rloo(batch))


@given(batches(long=True), st.sampled_from([0.0, 0.1]), gammas)
def test_reinforce_pp_matches_reference(batch: Trajectories, kl_coef: float, gamma: float) -> None:
    estimate = estimate_reinforce_pp(batch, kl="kl", kl_coef=kl_coef, gamma=gamma)
    np.testing.assert_allclose(
        estimate.advantages.numpy(),
        reference.reinforce_pp(batch, kl_coef, gamma),
        rtol=1e-7,
        atol=1e-7,
    )


@given(batches(), st.sampled_from([0.0, 1.0, 0.5]), gammas, st.sampled_from(["group", "batch"]))
def test_step_grpo_matches_reference(
    batch: Trajectories, weight: float, gamma: float, scope: Literal["group", "batch"]
) -> None:
    estimate = estimate_step_grpo(batch, "prm", outcome_weight=weight, gamma=gamma, scope=scope)
    close(estimate.advantages, reference.step_grpo(batch, "prm", weight, gamma, scope))


def test_step_grpo_batch_scope_penalises_a_mistake_the_whole_group_makes() -> None:
    # Group 0 makes the same wrong first step in every response; group 1 gets it right. Pooled
    # within the group, the shared mistake is invisible (a constant pool); pooled over the batch,
    # it is below the batch's mean and its advantage is negative.
    labels = [[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 0.0]]
    batch = Trajectories.from_episodes(
        {"label": labels}, {"outcome": [0.0, 0.0, 1.0, 0.0], "group": [0, 0, 1, 1]}
    )
    grouped = estimate_step_grpo(batch, "label", outcome_weight=0.0, gamma=0.0)
    pooled = estimate_step_grpo(batch, "label", outcome_weight=0.0, gamma=0.0, scope="batch")
    assert grouped.advantages[:4].tolist() == [0.0] * 4
    assert bool((pooled.advantages[:4] < 0).all())
    assert bool((pooled.advantages[4:7] > 0).all()) and float(pooled.advantages[7]) < 0
    with pytest.raises(ValueError, match="scope"):
        estimate_step_grpo(batch, "label", scope="prompt")  # type: ignore[arg-type]


@given(batches(max_trajectories=16), st.integers(1, 9))
def test_prof_keeps_what_the_slow_filter_keeps(batch: Trajectories, keep: int) -> None:
    np.testing.assert_array_equal(
        prof_keep(batch, "prm", keep).numpy(), reference.prof_keep(batch, "prm", keep, 0.5)
    )


@given(batches(max_trajectories=16), st.integers(1, 9))
def test_prof_is_grpo_on_the_kept_responses_alone(batch: Trajectories, keep: int) -> None:
    estimate = estimate_prof(batch, "prm", keep)
    assert estimate.keep is not None
    kept = estimate.keep
    outcome, group = batch.outcome, batch.episodes["group"]
    assert outcome is not None
    sub = Trajectories.from_episodes(
        {"prm": [e for e, k in zip(batch.to_episodes("prm"), kept.tolist(), strict=True) if k]},
        {"outcome": outcome[kept], "group": group[kept]},
    )
    on_kept = torch.repeat_interleave(kept, batch.lengths)
    close(estimate.advantages[on_kept], reference.grpo(sub))
    assert bool((estimate.advantages[~on_kept] == 0).all())


def test_prof_drops_the_correct_response_the_prm_distrusts_and_the_wrong_one_it_likes() -> None:
    batch = Trajectories.from_episodes(
        {"prm": [[0.9, 0.8], [0.9, 0.1], [0.7], [0.2, 0.9], [0.1, 0.1, 0.1], [0.6]]},
        {"outcome": [1.0, 1.0, 1.0, 0.0, 0.0, 0.0], "group": [0] * 6},
    )
    # means: correct 0.85, 0.5, 0.7; incorrect 0.55, 0.1, 0.6 -> keep 2 + 2
    assert prof_keep(batch, "prm", keep=4).tolist() == [True, False, True, True, True, False]
    # five correct of six: with room for three, the one incorrect response stays
    lopsided = batch.with_episodes(outcome=torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.0]))
    assert prof_keep(lopsided, "prm", keep=3).tolist() == [True, False, True, False, True, False]


@given(batches(), gammas)
def test_prime_matches_reference(batch: Trajectories, gamma: float) -> None:
    close(
        estimate_prime(batch, process="prm", gamma=gamma).advantages,
        reference.prime(batch, "prm", gamma),
    )


@given(batches(), gammas, st.sampled_from(["returns", "rewards"]))
def test_igpo_matches_reference(batch: Trajectories, gamma: float, normalize: str) -> None:
    estimate = estimate_igpo(batch, information_gain="prm", gamma=gamma, normalize=normalize)  # type: ignore[arg-type]
    close(estimate.advantages, reference.igpo(batch, gamma, normalize))


@given(trees(), st.sampled_from([0.0, 1.0, 2.0]))
def test_fork_relative_matches_path_walking_reference(batch: Trajectories, weight: float) -> None:
    close(
        estimate_fork_relative(batch, fork_weight=weight).advantages,
        reference.fork_relative(batch, weight),
    )


def test_fork_relative_without_tree_forks_only_at_the_prompt() -> None:
    batch = Trajectories.from_episodes(
        {"reward": [[0.0, 1.0], [0.5], [0.2, 0.1]]},
        {"outcome": [1.0, 0.0, 1.0], "group": [0, 0, 0]},
    )
    scores = torch.tensor([2.0, 0.5, 1.3], dtype=torch.float64)
    fork_at_prompt = torch.zeros(5, dtype=torch.float64)
    fork_at_prompt[batch.offsets[:-1]] = scores - scores.mean()
    expected = estimate_grpo(batch).advantages + fork_at_prompt
    torch.testing.assert_close(estimate_fork_relative(batch).advantages, expected)


@given(batches())
def test_policy_loss_weights_reproduce_the_aggregations(batch: Trajectories) -> None:
    loss = torch.rand(batch.num_steps, dtype=torch.float64)
    per_trajectory = [e.mean() for e in torch.split(loss, batch.lengths.tolist())]
    seq_mean = torch.stack(per_trajectory).mean()
    weights = policy_loss_weights(batch, "seq_mean_token_mean").to(torch.float64)
    torch.testing.assert_close((weights * loss).sum(), seq_mean)
    weights = policy_loss_weights(batch, "token_mean").to(torch.float64)
    torch.testing.assert_close((weights * loss).sum(), loss.mean(), rtol=1e-6, atol=1e-7)


def test_estimators_keep_dtype_and_device() -> None:
    batch = Trajectories.from_episodes(
        {
            "reward": [torch.tensor([0.0, 1.0], dtype=torch.float32)],
            "value": [torch.tensor([0.1, 0.2], dtype=torch.float32)],
        },
        {"outcome": torch.tensor([1.0], dtype=torch.float32), "group": torch.tensor([0])},
    )
    for estimate in (estimate_gae(batch), estimate_grpo(batch), estimate_reinforce_pp(batch)):
        assert estimate.advantages.dtype == torch.float32
        assert estimate.advantages.device == batch.device


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_estimators_keep_every_float_dtype(dtype: torch.dtype) -> None:
    batch = Trajectories.from_episodes(
        {"reward": [torch.tensor([0.0, 1.0], dtype=dtype), torch.tensor([1.0], dtype=dtype)]},
        {"outcome": torch.tensor([1.0, 0.0], dtype=dtype), "group": torch.tensor([0, 0])},
    )
    reference_advantages = estimate_grpo(
        batch.with_steps(reward=batch.step("reward").double())
    ).advantages
    for estimate in (
        estimate_grpo(batch),
        estimate_rloo(batch),
        estimate_reinforce_pp(batch),
        estimate_step_grpo(batch),
        estimate_prime(batch, process="reward"),
    ):
        assert estimate.advantages.dtype == dtype
        assert bool(torch.isfinite(estimate.advantages.float()).all())
    torch.testing.assert_close(
        estimate_grpo(batch).advantages.double(), reference_advantages, rtol=2e-2, atol=2e-2
    )


def test_empty_batch_gives_empty_advantages() -> None:
    empty = Trajectories(
        torch.zeros(1, dtype=torch.int64),
        {"reward": torch.zeros(0), "value": torch.zeros(0)},
        {"outcome": torch.zeros(0), "group": torch.zeros(0, dtype=torch.int64)},
    )
    for estimate in (
        estimate_gae(empty),
        estimate_grpo(empty),
        estimate_rloo(empty),
        estimate_reinforce_pp(empty),
        estimate_step_grpo(empty),
        estimate_prime(empty, process="reward"),
        estimate_igpo(empty, information_gain="reward"),
        estimate_fork_relative(empty),
    ):
        assert estimate.advantages.shape == (0,)


@given(batches(outcome=True))
def test_tree_without_shared_prefixes_equals_the_flat_batch(batch: Trajectories) -> None:
    # An "empty" tree: every trajectory is its own root chain, nothing is shared.
    parent = torch.arange(batch.num_steps) - 1
    parent[batch.offsets[:-1]] = -1
    tree = Trajectories(batch.offsets, batch.steps, batch.episodes, parent=parent)
    torch.testing.assert_close(
        estimate_fork_relative(tree).advantages, estimate_fork_relative(batch).advantages
    )
