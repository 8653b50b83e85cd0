"""The control world: Gymnasium/MiniGrid environments, rollouts into ``Trajectories``, wrappers that
shape rewards online, and a scripted DoorKey expert for demonstrations."""

from densereward.worlds.control.envs import make_env, make_vector_env
from densereward.worlds.control.rollouts import collect_rollouts
from densereward.worlds.control.wrappers import PotentialShaping, VectorPotentialShaping

__all__ = [
    "PotentialShaping",
    "VectorPotentialShaping",
    "collect_rollouts",
    "make_env",
    "make_vector_env",
]
