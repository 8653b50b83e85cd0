"""The padded estimators against densereward's own estimators on the ragged layout (an independent
path: ``from_padded`` then the Trajectories estimator), and their bad-input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from densereward import from_padded
from densereward.adapters.padded import (
    padded_estimate,
    padded_gae,
    padded_grpo,
    padded_reinforce_pp,
    padded_rloo,
)
from densereward.core.errors import ValidationError
from densereward.core.registry import build
from densereward.core.segments import discounted_reverse_cumsum, next_in_segment
from densereward.core.trajectories import Trajectories
from densereward.estimators import estimate_grpo, estimate_reinforce_pp, estimate_rloo


@st.composite
def layouts(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
    group, prompts, width = (
        draw(st.integers(1, 4)),
        draw(st.integers(1, 3)),
        draw(st.integers(1, 9)),
    )
    rows = group * prompts
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    lengths = torch.randint(1, width + 1, (rows,), generator=generator)
    mask = torch.arange(width)[None] < lengths[:, None]
    if draw(st.booleans()):  # holes, as tool output in a multi-turn response
        mask &= torch.rand(rows, width, generator=generator) > 0.3
        mask[:, 0] = True
    rewards = torch.randn(rows, width, generator=generator, dtype=torch.float64)
    values = torch.randn(rows, width, generator=generator, dtype=torch.float64)
    groups = np.repeat(np.arange(prompts), group)
    return rewards, values, mask, groups


def ragged(rewards: torch.Tensor, mask: torch.Tensor, groups: np.ndarray) -> Trajectories:
    batch = from_padded({"reward": rewards}, mask)
    return batch.with_episodes(group=torch.as_tensor(groups))


def back(batch: Trajectories, flat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(mask.shape, dtype=flat.dtype)
    out[mask] = flat  # from_padded keeps row-major order of the masked tokens
    return out


@settings(max_examples=80, deadline=None)
@given(
    layouts(),
    st.sampled_from([1.0, 0.7]),
    st.sampled_from([torch.bool, torch.int64, torch.float64]),
)
def test_padded_estimators_equal_the_ragged_ones(
    layout: tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray],
    gamma: float,
    dtype: torch.dtype,
) -> None:
    rewards, values, mask, groups = layout
    typed = mask.to(dtype)
    batch = ragged(rewards, mask, groups)
    for ours, theirs in (
        (padded_grpo(rewards, typed, groups), estimate_grpo(batch)),
        (padded_grpo(rewards, typed, groups, scale=False), estimate_grpo(batch, scale="none")),
        (padded_rloo(rewards, typed, groups), estimate_rloo(batch)),
    ):
        torch.testing.assert_close(ours[0], back(batch, theirs.advantages, mask))
        torch.testing.assert_close(ours[1], back(batch, theirs.returns, mask))
    advantages, returns = padded_reinforce_pp(rewards, typed, gamma)
    expected = estimate_reinforce_pp(batch, gamma=gamma)
    torch.testing.assert_close(returns, back(batch, expected.returns, mask))
    torch.testing.assert_close(advantages, back(batch, expected.advantages, mask))
    # GAE: the ragged recursion over the masked tokens, by the segment kernels
    flat_values = values[mask]
    delta = (
        batch.step("reward") + gamma * next_in_segment(flat_values, batch.segments) - flat_values
    )
    raw = discounted_reverse_cumsum(delta, batch.segments, gamma * 0.9)
    advantages, returns = padded_gae(rewards, values, typed, gamma, 0.9, whiten_advantages=False)
    torch.testing.assert_close(advantages, back(batch, raw, mask))
    torch.testing.assert_close(returns, back(batch, raw + flat_values, mask))


def test_step_level_estimate_reads_steps_from_nonzero_rewards_and_turn_ends() -> None:
    rewards = torch.tensor([[0.0, 0.3, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0, 1], [1, 1, 0, 0, 0]])
    estimator = build("estimator", {"kind": "step_grpo", "process": "reward", "scope": "batch"})
    advantages, returns = padded_estimate(estimator, rewards, mask, ["a", "a"])
    # steps: row 0 = [t0 t1] (0.3), [t2] (turn end, 0), [t4] (1.0); row 1 = [t0 t1] (0)
    steps = Trajectories.from_episodes({"reward": [[0.3, 0.0, 1.0], [0.0]]}, {"group": [0, 0]})
    expected = estimator(steps)
    flat = expected.advantages.tolist()
    assert advantages[0].tolist() == pytest.approx([flat[0], flat[0], flat[1], 0.0, flat[2]])
    assert advantages[1].tolist() == pytest.approx([flat[3], flat[3], 0.0, 0.0, 0.0])
    assert returns[0, 0] == pytest.approx(1.3)


@pytest.mark.parametrize(
    ("rewards", "mask", "match"),
    [
        (torch.tensor([[0.0, float("nan")]]), torch.tensor([[1, 1]]), "row 0, token 1: nan"),
        (torch.tensor([[float("inf"), 0.0]]), torch.tensor([[1, 0]]), "row 0, token 0: inf"),
        (
            torch.tensor([[0.0, 1.0]]),
            torch.tensor([[1, 2]]),
            "'response_mask': must hold only 0 and 1",
        ),
        (torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.5]]), "must hold only 0 and 1"),
        (
            torch.tensor([[0.0, 1.0]]),
            torch.tensor([[1, 1, 0]]),
            r"'response_mask': has shape \[1, 3\]",
        ),
        (torch.tensor([0.0, 1.0]), torch.tensor([1, 1]), r"must be \[batch, tokens\]"),
    ],
)
def test_bad_input_is_one_located_error(
    rewards: torch.Tensor, mask: torch.Tensor, match: str
) -> None:
    for call in (
        lambda: padded_grpo(rewards, mask, ["a"] * rewards.shape[0]),
        lambda: padded_reinforce_pp(rewards, mask, 0.9),
        lambda: padded_gae(rewards, torch.zeros_like(rewards), mask),
    ):
        with pytest.raises(ValidationError, match=match):
            call()


def test_non_finite_outside_the_mask_is_ignored_and_inputs_are_untouched() -> None:
    rewards = torch.tensor([[1.0, float("nan")], [2.0, 0.0]])
    mask = torch.tensor([[1, 0], [1, 1]])
    before = rewards.clone()
    advantages, returns = padded_grpo(rewards, mask, ["a", "a"])
    assert torch.isfinite(advantages).all() and returns[:, 0].tolist() == [1.0, 2.0]
    assert torch.equal(rewards.isnan(), before.isnan()) and torch.equal(
        rewards.nan_to_num(), before.nan_to_num()
    )
    with pytest.raises(ValidationError, match="index"):
        padded_grpo(rewards, mask, ["a"])


def test_a_group_estimator_without_groups_says_so() -> None:
    with pytest.raises(ValidationError, match="one group label per row"):
        padded_grpo(torch.ones(2, 2), torch.ones(2, 2), None)


def test_an_estimate_that_overflows_is_refused_naming_the_estimator() -> None:
    """Finite rewards whose returns overflow float32 (3e38 + 3e38) never reach a trainer."""
    from densereward.core.errors import NonFiniteError

    rewards = torch.tensor([[3e38, 0.0, 3e38], [1.0, 0.0, 2.0]])
    estimator = build("estimator", {"kind": "step_grpo", "process": "reward"})
    with pytest.raises(NonFiniteError, match=r"estimator step_grpo produced .*inf"):
        padded_estimate(estimator, rewards, torch.ones(2, 3), ["a", "a"])


def test_sums_that_overflow_are_refused_by_every_padded_estimator() -> None:
    from densereward.core.errors import NonFiniteError

    rewards = torch.tensor([[1.0, 0.0, 2.0], [3e38, 3e38, 3e38]])
    mask = torch.ones(2, 3)
    for call in (
        lambda: padded_grpo(rewards, mask, ["a", "a"]),
        lambda: padded_rloo(rewards, mask, ["a", "a"]),
        lambda: padded_reinforce_pp(rewards, mask),
        lambda: padded_reinforce_pp(rewards, mask, 0.9),
        lambda: padded_gae(rewards, torch.zeros_like(rewards), mask, 0.99, 0.95),
    ):
        with pytest.raises(NonFiniteError, match="row 1: the rewards' sums overflow"):
            call()
