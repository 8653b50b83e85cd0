"""Step rewards from any batched reward function, named in a recipe by its import path."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from densereward.core.errors import ConfigError, ValidationError
from densereward.core.layouts import transitions
from densereward.core.registry import register
from densereward.core.trajectories import Trajectories

RewardFunction = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], Any]
"""``R(obs, act, next_obs, terminated, truncated) -> [n]`` over a batch of transitions."""


def load_function(path: str) -> RewardFunction:
    """``"package.module:name"`` -> the callable it names."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigError("function", f"expected 'package.module:name', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError("function", f"cannot import {module_name!r} ({error})") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ConfigError("function", f"{path!r} is not a callable")
    return function


@register("signal", "reward_function", paper="imitation's reward-function convention")
@dataclass
class RewardFunctionSignal:
    """Step column from a batched ``R(obs, act, next_obs, terminated, truncated)`` (NumPy arrays).

    Reads step columns ``obs`` and ``action`` and the per-trajectory ``final_obs``; any
    ``imitation`` reward net fits through ``lambda o, a, n, te, tr: net.predict(o, a, n, te | tr)``.
    """

    function: str
    callable_: RewardFunction | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.callable_ = load_function(self.function)

    def __call__(self, batch: Trajectories, name: str) -> Trajectories:
        assert self.callable_ is not None
        arrays = [t.cpu().numpy() for t in transitions(batch)]
        values = np.asarray(self.callable_(*arrays), dtype=np.float64)
        if values.shape != (batch.num_steps,):
            raise ValidationError(
                f"steps.{name}",
                f"{self.function} returned shape {list(values.shape)}, "
                f"expected [{batch.num_steps}]",
            )
        return batch.with_steps(**{name: torch.from_numpy(values).to(batch.device)})
