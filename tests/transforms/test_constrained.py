"""Constrained combination: the Lagrangian reward, and multipliers learned by dual ascent."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from densereward import Trajectories
from densereward.core.errors import ConfigError
from densereward.core.registry import build
from densereward.core.returns import trajectory_scores
from densereward.core.segments import segment_sum
from densereward.pipeline import Pipeline, Recipe
from tests.reference import transforms as reference
from tests.strategies import batches


def constant_batch(kl: float, prm: float = 0.0) -> Trajectories:
    """Two responses whose constrained columns have the given per-trajectory return."""
    return Trajectories.from_episodes(
        {"reward": [[1.0, 0.0], [0.5]], "kl": [[kl / 2, kl / 2], [kl]], "prm": [[prm, 0.0], [prm]]},
        {"outcome": [1.0, 0.0]},
    )


@given(
    batches(),
    st.floats(-1.0, 1.0),
    st.floats(-1.0, 1.0),
    st.floats(0.01, 2.0),
    st.lists(st.integers(0, 3), min_size=1, max_size=4),
)
def test_combined_reward_is_the_lagrangian_and_multipliers_follow_dual_ascent(
    batch: Trajectories, tau_kl, tau_prm, rate, iterations
) -> None:
    spec = {
        "kind": "constrained",
        "objective": "reward",
        "target": "shaped",
        "constraints": {"kl": tau_kl, "prm": tau_prm, "outcome": 0.5},
        "learning_rate": rate,
    }
    transform = build("transform", spec)
    returns = [segment_sum(batch.step(c), batch.segments).numpy() for c in ("kl", "prm")]
    returns.append(batch.outcome.numpy())
    thresholds = [tau_kl, tau_prm, 0.5]
    multipliers = [0.0, 0.0, 0.0]
    for step, iteration in enumerate(iterations):
        if step == 0 or iteration != iterations[step - 1]:
            start = multipliers
        multipliers = reference.dual_ascent(start, [r.mean() for r in returns], thresholds, rate)
        out = transform(batch, iteration)
        np.testing.assert_allclose(list(transform.multipliers.values()), multipliers, atol=1e-12)
        expected = reference.lagrangian_returns(
            segment_sum(batch.step("reward"), batch.segments).numpy(),
            returns,
            multipliers,
            thresholds,
        )
        np.testing.assert_allclose(
            segment_sum(out.step("shaped"), out.segments).numpy(), expected, rtol=0, atol=1e-12
        )
        for name, value in zip(("kl", "prm", "outcome"), multipliers, strict=True):
            np.testing.assert_allclose(out.episode(f"multiplier_{name}").numpy(), value, atol=1e-12)
        assert all(m >= 0 for m in transform.multipliers.values())
        # the outcome, a constrained reward now inside the steps, is not counted twice
        assert bool((out.outcome == 0).all())
        assert trajectory_scores(out, "shaped").numpy() == pytest.approx(expected, abs=1e-12)


def test_multiplier_rises_while_violated_and_decays_to_zero_when_slack() -> None:
    transform = build(
        "transform", {"kind": "constrained", "constraints": {"kl": 1.0}, "learning_rate": 0.5}
    )
    rising = []
    for iteration in range(5):  # mean KL return 3 > 1: violated by 2 each time
        transform(constant_batch(kl=3.0), iteration)
        rising.append(transform.multipliers["kl"])
    assert rising == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0])
    falling = []
    for iteration in range(5, 12):  # mean KL return 0.2 < 1: slack by 0.8
        transform(constant_batch(kl=0.2), iteration)
        falling.append(transform.multipliers["kl"])
    assert falling[:6] == pytest.approx([4.6, 4.2, 3.8, 3.4, 3.0, 2.6])
    for iteration in range(12, 30):
        transform(constant_batch(kl=0.2), iteration)
    assert transform.multipliers["kl"] == 0.0  # exactly zero, never negative
    out = transform(constant_batch(kl=0.2), 30)
    # slack constraint, zero multiplier: the objective alone
    torch.testing.assert_close(out.step("reward"), constant_batch(0.2).step("reward"))
    assert [h["kl"] for h in transform.history][:2] == pytest.approx([1.0, 2.0])
    assert len(transform.history) == 31


def test_the_same_iteration_twice_steps_the_multipliers_once() -> None:
    transform = build("transform", {"kind": "constrained", "constraints": {"kl": 0.0}})
    first = transform(constant_batch(kl=1.0), 7)
    again = transform(constant_batch(kl=1.0), 7)
    assert transform.multipliers["kl"] == pytest.approx(0.1)
    torch.testing.assert_close(first.step("reward"), again.step("reward"))
    assert len(transform.history) == 1
    transform(constant_batch(kl=1.0), 8)
    assert transform.multipliers["kl"] == pytest.approx(0.2)


def test_maximum_caps_multipliers_and_bad_specs_are_refused() -> None:
    transform = build(
        "transform",
        {"kind": "constrained", "constraints": {"kl": 0.0}, "learning_rate": 10.0, "maximum": 3.0},
    )
    transform(constant_batch(kl=1.0), 0)
    assert transform.multipliers["kl"] == 3.0
    with pytest.raises(ConfigError, match="constraints"):
        build("transform", {"kind": "constrained", "constraints": {}})
    with pytest.raises(ConfigError, match="objective"):
        build("transform", {"kind": "constrained", "constraints": {"reward": 1.0}})
    with pytest.raises(ConfigError):
        build("transform", {"kind": "constrained", "constraints": {"kl": 0.0}, "initial": -1.0})


def test_multipliers_show_in_the_pipeline_diagnostics() -> None:
    recipe = Recipe.from_dict(
        {
            "transforms": [
                {"kind": "constrained", "constraints": {"kl": 1.0}, "learning_rate": 0.5}
            ],
            "estimator": {"kind": "grpo"},
        }
    )
    pipeline = Pipeline(recipe)
    for iteration in range(3):
        result = pipeline(constant_batch(kl=3.0), iteration=iteration, dtype=torch.float32)
    logged = [d for d in result.diagnostics if d.column == "multiplier_kl"]
    assert logged and logged[0].mean == pytest.approx(3.0)
