"""Evaluating rewards: distances between reward functions (STARC, EPIC)."""

from densereward.evaluation.reward_distance import (
    epic_canonicalize,
    epic_distance,
    epic_distance_sampled,
    lstd_values,
    starc_canonicalize,
    starc_distance,
    starc_distance_rollouts,
)

__all__ = [
    "epic_canonicalize",
    "epic_distance",
    "epic_distance_sampled",
    "lstd_values",
    "starc_canonicalize",
    "starc_distance",
    "starc_distance_rollouts",
]
