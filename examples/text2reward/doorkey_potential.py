"""A reward program in the form the Text2Reward loop asks for, for MiniGrid DoorKey: potential-based
shaping (gamma * phi(next_obs) - phi(obs)) with phi = 0.3 * holding the key + 0.3 * the goal in view.

Check it in the sandbox, then train with it:

    densereward sandbox examples/text2reward/doorkey_potential.py --package numpy
    # recipe: signals: {code: {kind: reward_code, file: examples/text2reward/doorkey_potential.py}}
"""

import numpy as np


def compute_reward(obs, act, next_obs, terminated, truncated):
    def phi(o):
        holding = (o[:, 3, 6, 0] == 5).astype(np.float64)
        goal_seen = (o[..., 0] == 8).any(axis=(1, 2)).astype(np.float64)
        return 0.3 * holding + 0.3 * goal_seen

    return 0.99 * phi(next_obs) * (1.0 - terminated) - phi(obs)
