from __future__ import annotations

import math

import pytest

from densereward.pipeline import Pipeline, Recipe
from densereward.trainers import PPOConfig
from densereward.trainers import train_ppo as train_on
from densereward.worlds.control.envs import make_vector_env

EMPTY = "MiniGrid-Empty-5x5-v0"
TINY = dict(
    total_steps=512,
    num_envs=2,
    num_steps=64,
    num_minibatches=2,
    update_epochs=2,
)


def train_ppo(config: PPOConfig, pipeline: Pipeline | None = None, env_id: str = EMPTY):
    return train_on(config, lambda n: make_vector_env(env_id, n), pipeline)


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
        PPOConfig(total_steps=81_920, learning_rate=1e-3, seed=0),
        env_id="MiniGrid-DoorKey-5x5-v0",
    ).metrics
    successes = [row["success_rate"] for row in metrics[-5:] if not math.isnan(row["success_rate"])]
    assert successes and min(successes) >= 0.9


def test_gaussian_policy_log_prob_matches_the_density() -> None:
    import torch

    from densereward.models.networks import ActorCritic

    torch.manual_seed(0)
    agent = ActorCritic((3,), action_dim=2)
    with torch.no_grad():
        agent.log_std.copy_(torch.tensor([-0.5, 0.3]))
    obs, action = torch.randn(5, 3), torch.randn(5, 2)
    _, log_prob, entropy, _ = agent.act(obs, action)
    mean = agent.actor(agent.actor_encoder(obs))
    std = torch.tensor([-0.5, 0.3]).exp()
    density = torch.exp(-0.5 * ((action - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
    torch.testing.assert_close(log_prob, density.log().sum(-1))
    torch.testing.assert_close(
        entropy, (0.5 + 0.5 * math.log(2 * math.pi) + torch.log(std)).sum().expand(5)
    )


def test_continuous_ppo_clips_actions_for_the_env_only() -> None:
    import gymnasium as gym

    seen: list[float] = []

    class Spy(gym.ActionWrapper):
        def action(self, action):
            seen.append(float(abs(action).max()))
            return action

    gym.register(
        "DenseRewardTest/SpyPendulum-v0",
        entry_point=lambda **kwargs: Spy(gym.make("Pendulum-v1", **kwargs)),
    )
    metrics = train_ppo(
        PPOConfig(
            total_steps=256, num_envs=1, num_steps=128, num_minibatches=2, update_epochs=1, seed=0
        ),
        env_id="DenseRewardTest/SpyPendulum-v0",
    ).metrics
    assert max(seen) <= 2.0  # Pendulum's bound; the sampled Gaussian actions exceed it
    assert [row["env_steps"] for row in metrics] == [128, 256]


def test_success_is_reported_only_where_the_environment_defines_it() -> None:
    # CartPole terminates when the pole falls (reward 1 on that step): that is no success.
    cartpole = train_ppo(
        PPOConfig(total_steps=512, num_envs=2, num_steps=128, update_epochs=1, seed=0),
        env_id="CartPole-v1",
    ).metrics
    assert all(math.isnan(row["success_rate"]) for row in cartpole)
    assert all(row["true_return"] > 0 for row in cartpole if row["episodes"])
    # MiniGrid: reaching the goal terminates with a positive reward (the world's wrapper says
    # so in the final info); a time-limit truncation is a failure, not a missing value.
    empty = train_ppo(PPOConfig(**TINY, seed=0)).metrics
    assert any(row["success_rate"] > 0 for row in empty if row["episodes"])
    assert all(not math.isnan(row["success_rate"]) for row in empty if row["episodes"])


def test_ppo_refuses_an_estimator_that_drops_trajectories_before_any_rollout():
    from densereward.core.errors import ConfigError

    def no_env(n):
        raise AssertionError("environments were made before the estimator was checked")

    pipeline = Pipeline(Recipe.from_dict({"estimator": {"kind": "prof", "process": "reward"}}))
    with pytest.raises(ConfigError, match="estimator: prof selects trajectories"):
        train_on(PPOConfig(**TINY), no_env, pipeline)


def test_ppo_refuses_environments_without_same_step_autoreset():
    from gymnasium.vector import AutoresetMode

    from densereward.core.errors import ConfigError

    with pytest.raises(ConfigError, match="same-step autoreset"):
        train_on(PPOConfig(**TINY), lambda n: make_vector_env(EMPTY, n, AutoresetMode.NEXT_STEP))


@pytest.mark.parametrize("field", ["total_steps", "num_envs", "num_minibatches"])
def test_a_non_positive_size_is_refused_with_its_name(field: str) -> None:
    from densereward.core.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"{field}: must be positive, got 0"):
        PPOConfig(**{**TINY, field: 0})
