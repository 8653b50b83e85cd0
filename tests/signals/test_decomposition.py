from __future__ import annotations

import numpy as np
import torch

from densereward import Trajectories
from densereward.core.layouts import pad_segments
from densereward.core.segments import Segments
from densereward.pipeline import Pipeline, Recipe
from densereward.signals import SignalContext


def test_pad_segments_places_each_step_in_its_row() -> None:
    values = torch.arange(6.0)[:, None].repeat(1, 2)
    rows, mask = pad_segments(values, Segments(torch.tensor([0, 1, 4, 6])))
    assert mask.tolist() == [[True, False, False], [True, True, True], [True, True, False]]
    assert rows[1, :, 0].tolist() == [1.0, 2.0, 3.0] and rows[2, 2, 0].item() == 0.0


def test_return_decomposition_credits_the_step_that_decides_the_outcome() -> None:
    # Six-step episodes; at step 2 a flag appears in the observation of the episodes that will
    # succeed (return 1 at the end). Credit should move from the last step to step 2.
    rng = np.random.default_rng(0)
    episodes, count = 6, 200
    success = rng.random(count) < 0.5
    obs = np.zeros((count, episodes, 2), dtype=np.float32)
    obs[:, :, 0] = np.arange(episodes) / episodes
    obs[success, 2:, 1] = 1.0
    rewards = np.zeros((count, episodes))
    rewards[success, -1] = 1.0
    batch = Trajectories.from_episodes(
        {"obs": list(obs), "reward": list(rewards)}, {"terminated": np.ones(count, bool)}
    )
    recipe = Recipe.from_dict(
        {
            "signals": {
                "prediction": {"kind": "return_decomposition", "train_steps": 400, "batch_size": 64}
            },
            "transforms": [
                {"kind": "return_decomposition", "prediction": "prediction", "max_error": 0.25}
            ],
            "estimator": {"kind": "gae"},
        }
    )
    pipeline = Pipeline(recipe, SignalContext(seed=0))
    out, _ = pipeline.transform(batch)
    shaped = out.step("reward").numpy().reshape(count, episodes)
    np.testing.assert_allclose(shaped.sum(1), rewards.sum(1), atol=1e-6)  # exact per-episode sum
    assert shaped[success, 2].mean() > 0.5 + shaped[success, 3:].mean()
    assert abs(shaped[success, -1].mean()) < 0.3  # the final step no longer carries the credit
