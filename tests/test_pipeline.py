from __future__ import annotations

import pytest
import torch
from hypothesis import given

from densereward import ConfigError, Pipeline, Recipe, Trajectories, ValidationError
from densereward.estimators import estimate_step_grpo
from densereward.transforms import clip_rewards, delta_rewards
from tests.strategies import batches


@given(batches())
def test_pipeline_equals_composing_the_functions_by_hand(batch: Trajectories) -> None:
    recipe = Recipe.from_dict(
        {
            "transforms": [
                {"kind": "clip_delta", "source": "prm", "eta": 0.5, "target": "process"}
            ],
            "estimator": {"kind": "step_grpo", "process": "process", "outcome_weight": 0.5},
        }
    )
    result = Pipeline(recipe)(batch)
    process = delta_rewards(clip_rewards(batch.step("prm"), 0.5), batch.segments)
    expected = estimate_step_grpo(batch.with_steps(process=process), "process", 0.5)
    torch.testing.assert_close(result.advantages, expected.advantages)
    torch.testing.assert_close(result.trajectories.step("advantage"), expected.advantages)
    assert torch.equal(result.trajectories.step("prm"), batch.step("prm"))  # input columns kept


def test_non_finite_values_are_reported_with_the_stage_that_made_them() -> None:
    recipe = Recipe.from_dict(
        {
            "transforms": [{"kind": "anneal", "schedule": "constant", "start": 1e308}],
            "estimator": {"kind": "grpo"},
        }
    )
    batch = Trajectories.from_episodes({"reward": [[1.0, 10.0]]})
    with pytest.raises(
        ValidationError, match=r"trajectory 0, step 1.*transforms\[0\] anneal produced a non-finite"
    ):
        Pipeline(recipe)(batch)


def test_recipe_is_validated_when_loaded() -> None:
    with pytest.raises(ConfigError, match=r"transforms\[1\]\.eta: expected a number"):
        Recipe.from_dict(
            {
                "transforms": [{"kind": "clip"}, {"kind": "clip", "eta": "x"}],
                "estimator": {"kind": "grpo"},
            }
        )
    with pytest.raises(ConfigError, match="unknown recipe key"):
        Recipe.from_dict({"estimator": {"kind": "grpo"}, "estimater": {}})
    with pytest.raises(ConfigError, match=r"combine' needs parameter\(s\): weights"):
        Recipe.from_dict({"transforms": [{"kind": "combine"}], "estimator": {"kind": "grpo"}})


def test_a_stage_that_changes_the_verdict_is_refused() -> None:
    """The verdict is the grader's: a transform may read it, never rewrite or drop it."""
    from dataclasses import dataclass

    from densereward.core.components import Transform
    from densereward.core.registry import register, unregister

    @register("transform", "test_overrule", paper="test only")
    @dataclass(frozen=True)
    class Overrule(Transform):
        def __call__(self, batch, iteration=0):
            return batch.with_episodes(verdict=torch.ones(len(batch), dtype=torch.float64))

    try:
        batch = Trajectories.from_episodes(
            {"reward": [[0.0], [0.0]]}, {"outcome": [1.0, 0.0], "verdict": [1.0, 0.0]}
        )
        combine = {"kind": "combine", "weights": {"outcome": 1.0}}
        kept = Pipeline(Recipe.from_dict({"transforms": [combine], "estimator": {"kind": "grpo"}}))
        out = kept(batch).trajectories
        assert out.episode("outcome").tolist() == [0.0, 0.0]  # the reward moved into the steps
        assert out.verdict is batch.verdict  # the verdict did not
        recipe = Recipe.from_dict(
            {"transforms": [combine, {"kind": "test_overrule"}], "estimator": {"kind": "grpo"}}
        )
        with pytest.raises(
            ValidationError, match=r"transforms\[1\] test_overrule changed the verdict"
        ):
            Pipeline(recipe)(batch)
    finally:
        unregister("transform", "test_overrule")
