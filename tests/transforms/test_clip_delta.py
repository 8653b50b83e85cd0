"""Clip and Delta bound the return of any trajectory, whatever steps are appended."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from densereward.core.segments import Segments
from densereward.transforms import clip_rewards, delta_rewards
from tests.reference import transforms as reference
from tests.strategies import batches, episodes_of

step_scores = st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=30)


def _one(x: list[float]) -> tuple[torch.Tensor, Segments]:
    return torch.tensor(x, dtype=torch.float64), Segments(torch.tensor([0, len(x)]))


@given(step_scores, step_scores, st.floats(0.0, 1.0))
def test_clip_return_never_grows_by_appending_steps(prefix, appended, eta) -> None:
    before = clip_rewards(torch.tensor(prefix, dtype=torch.float64), eta).sum()
    after = clip_rewards(torch.tensor(prefix + appended, dtype=torch.float64), eta).sum()
    assert after <= before <= 0.0


@given(step_scores, step_scores)
def test_delta_return_to_go_equals_step_score_so_return_is_bounded(prefix, appended) -> None:
    rewards, segments = _one(prefix + appended)
    shaped = delta_rewards(rewards, segments)
    return_to_go = torch.flip(torch.cumsum(torch.flip(shaped, [0]), 0), [0])
    torch.testing.assert_close(return_to_go, rewards)
    # Whatever is appended, the whole return is the first step's score: at most 1 here.
    assert shaped.sum().item() <= max(prefix + appended) + 1e-12


@given(step_scores, st.integers(1, 50), st.floats(0.0, 1.0))
def test_repeating_good_steps_farms_raw_prm_but_not_clip_delta(steps, repeats, eta) -> None:
    # The hack from Gao et al.: pad a solution with many "correct-looking" steps scored 0.95.
    padded = steps + [0.95] * repeats
    raw_gain = sum(padded) - sum(steps)
    assert raw_gain > 0.9 * repeats  # raw PRM reward grows linearly with the padding
    for x in (steps, padded):
        rewards, segments = _one(x)
        shaped = delta_rewards(clip_rewards(rewards, eta), segments)
        np.testing.assert_allclose(shaped.sum().item(), min(x[0] - eta, 0.0), atol=1e-12)


@given(batches(), st.floats(0.0, 1.0))
def test_clip_and_delta_match_reference_on_ragged_batches(batch, eta) -> None:
    prm = batch.step("prm")
    np.testing.assert_array_equal(
        clip_rewards(prm, eta).numpy(),
        np.concatenate(reference.clip(episodes_of(batch, "prm"), eta)),
    )
    np.testing.assert_allclose(
        delta_rewards(prm, batch.segments).numpy(),
        np.concatenate(reference.delta(episodes_of(batch, "prm"))),
        rtol=1e-12,
    )
