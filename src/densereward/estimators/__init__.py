"""Advantage estimators. Each is a pure function of a ``Trajectories`` batch, plus a registered
component wrapping it for recipes. Imports only ``densereward.core``.
Every module of the package is imported here, so a new one registers by being written."""

from densereward.core.registry import import_submodules
from densereward.estimators.base import Estimate
from densereward.estimators.fork import estimate_fork_relative
from densereward.estimators.gae import estimate_gae
from densereward.estimators.group import estimate_grpo, estimate_rloo, policy_loss_weights
from densereward.estimators.igpo import estimate_igpo
from densereward.estimators.prof import estimate_prof, prof_keep
from densereward.estimators.reinforce_pp import estimate_reinforce_pp
from densereward.estimators.step_grpo import estimate_prime, estimate_step_grpo

import_submodules(__name__)

__all__ = [
    "Estimate",
    "estimate_fork_relative",
    "estimate_gae",
    "estimate_grpo",
    "estimate_igpo",
    "estimate_prime",
    "estimate_prof",
    "estimate_reinforce_pp",
    "estimate_rloo",
    "estimate_step_grpo",
    "policy_loss_weights",
    "prof_keep",
]
