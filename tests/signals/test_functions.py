from __future__ import annotations

import numpy as np
import pytest
import torch

from densereward import ConfigError, Recipe, Trajectories, ValidationError
from densereward.core.layouts import transitions
from densereward.pipeline import Pipeline


def distance_gain(obs, act, next_obs, terminated, truncated):
    """Test reward: how much closer to 0 the next observation is, 5 on termination."""
    return np.abs(obs[:, 0]) - np.abs(next_obs[:, 0]) + 5.0 * terminated


def wrong_shape(obs, act, next_obs, terminated, truncated):
    return np.zeros(3)


def batch() -> Trajectories:
    return Trajectories.from_episodes(
        {"obs": [np.array([[3.0], [2.0]]), np.array([[1.0]])], "action": [[0, 1], [1]]},
        {
            "terminated": [True, False],
            "truncated": [False, True],
            "final_obs": np.array([[9.0], [0.5]]),
        },
    )


def test_transitions_follow_imitation_order_and_episode_ends() -> None:
    obs, act, next_obs, terminated, truncated = transitions(batch())
    assert next_obs[:, 0].tolist() == [2.0, 9.0, 0.5]
    assert terminated.tolist() == [False, True, False] and truncated.tolist() == [
        False,
        False,
        True,
    ]
    assert act.tolist() == [0, 1, 1] and obs[:, 0].tolist() == [3.0, 2.0, 1.0]


def test_reward_function_signal_by_import_path() -> None:
    recipe = Recipe.from_dict(
        {
            "signals": {
                "heuristic": {"kind": "reward_function", "function": f"{__name__}:distance_gain"}
            },
            "estimator": {"kind": "gae"},
        }
    )
    out, _ = Pipeline(recipe).transform(batch())
    torch.testing.assert_close(
        out.step("heuristic"), torch.tensor([1.0, 2.0 - 9.0 + 5.0, 0.5], dtype=torch.float64)
    )


def test_bad_reward_functions_fail_clearly() -> None:
    with pytest.raises(ConfigError, match="cannot import 'no_such_module'"):
        Recipe.from_dict(
            {
                "signals": {"h": {"kind": "reward_function", "function": "no_such_module:f"}},
                "estimator": {"kind": "gae"},
            }
        )
    with pytest.raises(ConfigError, match=r"expected 'package\.module:name'"):
        Recipe.from_dict(
            {
                "signals": {"h": {"kind": "reward_function", "function": "nocolon"}},
                "estimator": {"kind": "gae"},
            }
        )
    recipe = Recipe.from_dict(
        {
            "signals": {"h": {"kind": "reward_function", "function": f"{__name__}:wrong_shape"}},
            "estimator": {"kind": "gae"},
        }
    )
    two_steps = Trajectories.from_episodes(
        {"obs": [np.array([[1.0], [2.0]])], "action": [[0, 0]]}, {"final_obs": np.array([[0.0]])}
    )
    with pytest.raises(ValidationError, match=r"steps\.h.*returned shape \[3\], expected \[2\]"):
        Pipeline(recipe).transform(two_steps)


def test_terminal_steps_without_final_obs_see_zeros_not_the_next_trajectory() -> None:
    terminal = Trajectories.from_episodes(
        {"obs": [np.array([[3.0], [2.0]]), np.array([[7.0]])], "action": [[0, 1], [1]]}
    )
    _, _, next_obs, terminated, _ = transitions(terminal)
    assert next_obs[:, 0].tolist() == [2.0, 0.0, 0.0]
    assert terminated.tolist() == [False, True, True]
