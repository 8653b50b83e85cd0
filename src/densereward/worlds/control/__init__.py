"""The control world: Gymnasium/MiniGrid environments, rollouts into ``Trajectories``, wrappers that
shape rewards online, and a scripted DoorKey expert for demonstrations."""

from densereward.worlds.control.envs import make_env, make_vector_env
from densereward.worlds.control.wrappers import PotentialShaping, VectorPotentialShaping

__all__ = ["PotentialShaping", "VectorPotentialShaping", "make_env", "make_vector_env"]
