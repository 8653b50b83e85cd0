"""The control world: Gymnasium/MiniGrid environments, rollouts into ``Trajectories``, wrappers that
shape rewards online, a scripted DoorKey expert for demonstrations, and ``ControlWorld``, the
``World`` that trains PPO on them."""

from densereward.worlds.control.envs import make_env, make_vector_env
from densereward.worlds.control.rollouts import collect_rollouts
from densereward.worlds.control.world import ControlWorld
from densereward.worlds.control.wrappers import PotentialShaping, VectorPotentialShaping

__all__ = [
    "ControlWorld",
    "PotentialShaping",
    "VectorPotentialShaping",
    "collect_rollouts",
    "make_env",
    "make_vector_env",
]
