from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given

from densereward import Trajectories, ValidationError
from tests.strategies import batches


def test_nan_reward_is_located_by_trajectory_and_step() -> None:
    with pytest.raises(ValidationError) as caught:
        Trajectories.from_episodes({"reward": [[0.0, 1.0], [0.5, float("nan"), 0.0]]})
    error = caught.value
    assert (error.field, error.trajectory, error.step) == ("steps.reward", 1, 1)
    assert "NaN" in str(error) and "trajectory 1" in str(error) and "step 1" in str(error)


def test_infinite_outcome_is_located_by_trajectory() -> None:
    with pytest.raises(ValidationError, match=r"trajectory 2.*'outcome'.*inf"):
        Trajectories.from_episodes(
            {"r": [[0.0], [0.0], [0.0]]}, {"outcome": [0.0, 1.0, float("inf")]}
        )


def test_mismatched_step_columns_are_rejected() -> None:
    with pytest.raises(
        ValidationError, match=r"trajectory 1.*steps.value.*length 1, but steps.reward has 2"
    ):
        Trajectories.from_episodes({"reward": [[0.0], [1.0, 2.0]], "value": [[0.0], [1.0]]})


def test_offsets_that_disagree_with_columns_are_rejected() -> None:
    with pytest.raises(ValidationError, match=r"steps.reward.*3 rows, expected one per step \(4\)"):
        Trajectories(torch.tensor([0, 2, 4]), {"reward": torch.zeros(3)})
    with pytest.raises(ValidationError, match=r"trajectory 1: field 'offsets': has no steps"):
        Trajectories(torch.tensor([0, 2, 2, 3]), {"reward": torch.zeros(3)})


def test_terminated_and_truncated_together_are_rejected() -> None:
    with pytest.raises(ValidationError, match=r"trajectory 0.*both terminated and truncated"):
        Trajectories.from_episodes({"r": [[0.0]]}, {"terminated": [True], "truncated": [True]})


def test_overlapping_token_spans_are_rejected() -> None:
    with pytest.raises(ValidationError, match=r"trajectory 0, step 1.*token_spans"):
        Trajectories.from_episodes({"r": [[0.0, 0.0]]}, token_spans=[[[0, 5], [4, 8]]])


def test_tree_parent_must_precede_child() -> None:
    with pytest.raises(ValidationError, match=r"trajectory 0, step 0.*parent"):
        Trajectories.from_episodes({"r": [[0.0], [0.0]]}, parent=[[1], [-1]])


def test_integer_outcome_becomes_a_float_reward() -> None:
    batch = Trajectories.from_episodes({"r": [[0.0]]}, {"outcome": [1]})
    assert batch.outcome is not None and batch.outcome.is_floating_point()


@given(batches())
def test_episode_list_round_trip_is_exact(batch: Trajectories) -> None:
    rebuilt = Trajectories.from_episodes(
        {name: batch.to_episodes(name) for name in batch.steps}, dict(batch.episodes)
    )
    assert torch.equal(rebuilt.offsets, batch.offsets)
    for name, column in batch.steps.items():
        assert torch.equal(rebuilt.steps[name], column)


def test_numpy_input_is_wrapped_without_copy_and_torch_dtype_is_kept() -> None:
    rewards = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    batch = Trajectories(np.array([0, 1, 3]), {"reward": rewards})
    assert batch.steps["reward"].data_ptr() == rewards.__array_interface__["data"][0]
    half = Trajectories(torch.tensor([0, 2]), {"reward": torch.zeros(2, dtype=torch.float16)})
    assert half.steps["reward"].dtype == torch.float16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batch_stays_on_device() -> None:
    from densereward.estimators import estimate_grpo

    batch = Trajectories.from_episodes({"reward": [[0.0, 1.0], [1.0]]}, {"group": [0, 0]}).to(
        "cuda"
    )
    assert estimate_grpo(batch).advantages.device.type == "cuda"
