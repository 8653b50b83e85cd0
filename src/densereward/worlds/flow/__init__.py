"""The flow world: a prompt-conditioned rectified flow on 2-D Gaussian mixtures, its ODE and
Flow-GRPO SDE samplers, gold and hackable proxy rewards, DenseGRPO's reward-gain signal (at any
ODE granularity, for G²RPO), the sampling schemes of B²-DiffuRL (branches, backward progressive
training) and DenseGRPO (noise calibration), Feynman-Kac steering and diffusion tree sampling,
and ``FlowWorld``, the ``World`` that fine-tunes it with Flow-GRPO."""

from densereward.worlds.flow.steering import fk_steer
from densereward.worlds.flow.tree import tree_sample
from densereward.worlds.flow.world import FlowGRPOConfig, FlowWorld

__all__ = ["FlowGRPOConfig", "FlowWorld", "fk_steer", "tree_sample"]
