"""No non-finite number reaches an optimiser: a value too large for the trainer's float32, a
loss that overflows, a NaN from a reward function — each stops the run with one line naming the
method, seed, update and the first stage that produced it; and large finite rewards keep exact
group-normalised advantages (no overflow to all-zero)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from densereward import Trajectories
from densereward.core.errors import NonFiniteError
from densereward.core.segments import Groups, Segments, pooled_zscore
from densereward.estimators.group import estimate_grpo, estimate_rloo
from densereward.pipeline import Pipeline, Recipe
from densereward.trainers import PPOConfig, train_ppo
from densereward.worlds.control.envs import make_vector_env

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(total_steps=256, num_envs=2, num_steps=64, num_minibatches=2, update_epochs=1)


def huge(obs: np.ndarray, *rest: np.ndarray) -> np.ndarray:
    """A reward model gone wrong: 1e39 per step, finite in float64, inf in float32."""
    return np.full(len(obs), 1e39)


def large(obs: np.ndarray, *rest: np.ndarray) -> np.ndarray:
    """1e30: fits float32, but the value loss squares it."""
    return np.full(len(obs), 1e30)


def nan_after_the_first_update(obs: np.ndarray, *rest: np.ndarray) -> np.ndarray:
    out = np.zeros(len(obs))
    out[-1] = np.nan
    return out


def pipeline(function: str) -> Pipeline:
    return Pipeline(
        Recipe.from_dict(
            {
                "signals": {"model": {"kind": "reward_function", "function": function}},
                "transforms": [{"kind": "combine", "weights": {"reward": 1.0, "model": 1.0}}],
                "estimator": {"kind": "gae"},
            }
        )
    )


@pytest.mark.parametrize(
    ("function", "message"),
    [
        (
            "huge",
            r"seed 3, update 1: trajectory \d+, step \d+: field 'model': signals\.model "
            r"reward_function produced 1e\+39, which is not finite in float32",
        ),
        ("large", r"seed 3, update 1: field 'value_loss': is inf"),
        (
            "nan_after_the_first_update",
            r"seed 3, update 1: .*field 'model': signals\.model reward_function produced a "
            r"non-finite value \(nan\)",
        ),
    ],
)
def test_ppo_stops_before_a_non_finite_step(function: str, message: str) -> None:
    with pytest.raises(NonFiniteError, match=message):
        train_ppo(
            PPOConfig(**TINY, seed=3),
            lambda n: make_vector_env("MiniGrid-Empty-5x5-v0", n),
            pipeline(f"tests.trainers.test_non_finite:{function}"),
        )


@pytest.mark.parametrize("mode", ["--local", "--no-local"])
def test_the_run_names_the_method_and_exits_2_with_one_line(tmp_path: Path, mode: str) -> None:
    recipe = tmp_path / "huge.yaml"
    recipe.write_text(
        """
name: huge
world: {kind: control, env_id: MiniGrid-Empty-5x5-v0}
trainer: {kind: ppo, total_steps: 256, num_envs: 2, num_steps: 64, update_epochs: 1}
methods:
  broken:
    signals: {model: {kind: reward_function, function: "tests.trainers.test_non_finite:huge"}}
    transforms: [{kind: combine, weights: {reward: 1.0, model: 1.0}}]
"""
    )
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("densereward")),
            *("run", str(recipe), mode, "--out", str(tmp_path / "run")),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("error: method broken, seed 0, update 1: ")
    assert "not finite in float32" in lines[0]
    assert not (tmp_path / "run" / "report.md").exists()


def test_an_overflowing_standard_deviation_no_longer_zeroes_grpo_advantages() -> None:
    rewards = [1e200, -1e200, 3e200, 0.0]
    batch = Trajectories.from_episodes({"reward": [[r] for r in rewards]}, {"group": [0, 0, 0, 0]})
    advantages = estimate_grpo(batch, eps=0.0).advantages
    scores = torch.tensor(rewards, dtype=torch.float64) / 1e200
    expected = (scores - scores.mean()) / scores.std()
    torch.testing.assert_close(advantages, expected, rtol=1e-12, atol=0)
    assert bool((advantages != 0).all())


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=12),
    st.integers(-1000, 960),
    st.sampled_from([torch.float64, torch.float32]),
)
def test_group_statistics_are_scale_free_for_powers_of_two(
    values: list[float], exponent: int, dtype: torch.dtype
) -> None:
    """With eps = 0, z-scores and leave-one-out baselines are exactly scale-equivariant under
    multiplication by 2^k: computed on x / 2^e, nothing overflows or underflows anywhere in the
    representable range (before, 1e155 in float64 or 1e20 in float32 squared to inf)."""
    limit = 960 if dtype == torch.float64 else 100
    exponent = max(min(exponent, limit), -limit)
    x = torch.tensor(values, dtype=dtype)
    scaled = torch.ldexp(x, torch.tensor(exponent))
    if not bool(torch.isfinite(scaled).all()) or bool(((scaled == 0) & (x != 0)).any()):
        return
    groups = Groups(torch.arange(len(values)) % 2, 2)
    torch.testing.assert_close(groups.zscore(scaled, eps=0.0), groups.zscore(x, eps=0.0))
    baseline = torch.ldexp(groups.leave_one_out_mean(x), torch.tensor(exponent))
    torch.testing.assert_close(groups.leave_one_out_mean(scaled), baseline)
    segments = Segments(torch.tensor([0, len(values) // 2, len(values)]))
    pools = Groups(torch.tensor([0, 0]), 1)
    torch.testing.assert_close(
        pooled_zscore(scaled, segments, pools, eps=0.0), pooled_zscore(x, segments, pools, eps=0.0)
    )


def test_rloo_is_exact_for_large_rewards() -> None:
    batch = Trajectories.from_episodes(
        {"reward": [[1e308], [1e308], [0.0]]}, {"group": [0, 0, 0]}
    )  # the group's sum, 2e308, is beyond float64
    assert estimate_rloo(batch).advantages.tolist() == [5e307, 5e307, -1e308]
