from __future__ import annotations

import math

import pytest

from densereward.pipeline import Pipeline, Recipe
from densereward.trainers import PPOConfig, train_ppo

TINY = dict(
    env_id="MiniGrid-Empty-5x5-v0",
    total_steps=512,
    num_envs=2,
    num_steps=64,
    num_minibatches=2,
    update_epochs=2,
)


def test_ppo_is_deterministic_under_a_seed() -> None:
    first = train_ppo(PPOConfig(**TINY, seed=3)).metrics
    second = train_ppo(PPOConfig(**TINY, seed=3)).metrics
    other = train_ppo(PPOConfig(**TINY, seed=4)).metrics
    keys = ("true_return", "value_loss", "policy_loss", "entropy", "approx_kl")
    same = [[row[k] for k in keys] for row in first]
    assert same == [[row[k] for k in keys] for row in second]
    assert same != [[row[k] for k in keys] for row in other]
    assert [row["env_steps"] for row in first] == [128, 256, 384, 512]


def test_true_and_shaped_rewards_are_logged_apart() -> None:
    # A constant bonus of 1 per step shifts the shaped reward by exactly 1, never the true one.
    recipe = Recipe.from_dict(
        {
            "signals": {"bonus": {"kind": "count_bonus", "scale": 0.0}},
            "transforms": [
                {"kind": "combine", "weights": {"reward": 1.0, "bonus": 1.0}},
                {"kind": "anneal", "schedule": "constant", "start": 1.0},
            ],
            "estimator": {"kind": "gae"},
        }
    )
    plain = train_ppo(PPOConfig(**TINY, seed=0)).metrics
    shaped = train_ppo(PPOConfig(**TINY, seed=0), Pipeline(recipe)).metrics
    for a, b in zip(plain, shaped, strict=True):
        assert a["true_reward_per_step"] == b["true_reward_per_step"]
        assert math.isclose(a["shaped_reward_per_step"], a["true_reward_per_step"])


@pytest.mark.slow
def test_ppo_learns_doorkey_5x5() -> None:
    metrics = train_ppo(
        PPOConfig(env_id="MiniGrid-DoorKey-5x5-v0", total_steps=81_920, learning_rate=1e-3, seed=0)
    ).metrics
    successes = [row["success_rate"] for row in metrics[-5:] if not math.isnan(row["success_rate"])]
    assert successes and min(successes) >= 0.9
