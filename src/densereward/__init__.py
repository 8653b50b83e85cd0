"""densereward: dense, safe step-level training signal from sparse or untrustworthy rewards.

The public surface: the data model, the pipeline, file IO, and the estimator/transform functions.
"""

from densereward.core import (
    ConfigError,
    DenseRewardError,
    Trajectories,
    ValidationError,
    broadcast_to_tokens,
    from_padded,
    from_rollout_buffer,
    to_padded,
    to_rollout_buffer,
)
from densereward.core.components import SignalContext
from densereward.core.registry import components, register
from densereward.io import read_trajectories, write_trajectories
from densereward.pipeline import Pipeline, PipelineResult, Recipe

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DenseRewardError",
    "Pipeline",
    "PipelineResult",
    "Recipe",
    "SignalContext",
    "Trajectories",
    "ValidationError",
    "broadcast_to_tokens",
    "components",
    "from_padded",
    "from_rollout_buffer",
    "read_trajectories",
    "register",
    "to_padded",
    "to_rollout_buffer",
    "write_trajectories",
]
