"""The data model and the vectorized kernels everything else is built on. Imports nothing of ours."""

from densereward.core.errors import ConfigError, DenseRewardError, ValidationError
from densereward.core.layouts import (
    broadcast_to_tokens,
    from_padded,
    from_rollout_buffer,
    to_padded,
    to_rollout_buffer,
)
from densereward.core.segments import Groups, Segments, discounted_reverse_cumsum
from densereward.core.trajectories import Trajectories

__all__ = [
    "ConfigError",
    "DenseRewardError",
    "Groups",
    "Segments",
    "Trajectories",
    "ValidationError",
    "broadcast_to_tokens",
    "discounted_reverse_cumsum",
    "from_padded",
    "from_rollout_buffer",
    "to_padded",
    "to_rollout_buffer",
]
