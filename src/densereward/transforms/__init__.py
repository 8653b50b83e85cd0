"""Reward transforms. Each is a pure function of tensors plus a registered component that applies
it to a ``Trajectories`` batch in a recipe. Imports only ``densereward.core``.
Every module of the package is imported here, so a new one registers by being written."""

from densereward.core.registry import import_submodules
from densereward.transforms.blending import Blend
from densereward.transforms.clip_delta import clip_rewards, delta_rewards
from densereward.transforms.combine import Combine
from densereward.transforms.gating import gate_rewards
from densereward.transforms.normalize import normalize_column
from densereward.transforms.potential import shape_potential
from densereward.transforms.preference import log_sigmoid_centre, preference_as_reward
from densereward.transforms.redistribution import (
    redistribute_return_decomposition,
    redistribute_weighted,
)
from densereward.transforms.schedules import anneal_weight
from densereward.transforms.thought import thought_rewards
from densereward.transforms.trust import trust_weights

import_submodules(__name__)

__all__ = [
    "Blend",
    "Combine",
    "anneal_weight",
    "clip_rewards",
    "delta_rewards",
    "gate_rewards",
    "log_sigmoid_centre",
    "normalize_column",
    "preference_as_reward",
    "redistribute_return_decomposition",
    "redistribute_weighted",
    "shape_potential",
    "thought_rewards",
    "trust_weights",
]
