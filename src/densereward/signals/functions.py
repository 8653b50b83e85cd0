"""Step rewards from any batched reward function, named in a recipe by its import path."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from densereward.core.components import Signal, SignalContext
from densereward.core.errors import ConfigError, ValidationError
from densereward.core.layouts import transitions
from densereward.core.registry import register
from densereward.core.trajectories import Trajectories

RewardFunction = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], Any]
"""``R(obs, act, next_obs, terminated, truncated) -> [n]`` over a batch of transitions."""


def load_function(path: str, field: str = "function") -> Any:
    """``"package.module:name"`` -> the callable it names; errors name ``field``."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigError(field, f"expected 'package.module:name', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(field, f"cannot import {module_name!r} ({error})") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ConfigError(field, f"{path!r} is not a callable")
    return function


@register("signal", "reward_function", paper="imitation's reward-function convention")
@dataclass(frozen=True)
class RewardFunctionSignal(Signal):
    """Step column from a batched ``R(obs, act, next_obs, terminated, truncated)`` (NumPy arrays).

    Reads step columns ``obs`` and ``action`` and the per-trajectory ``final_obs``; any
    ``imitation`` reward net fits through ``lambda o, a, n, te, tr: net.predict(o, a, n, te | tr)``.
    """

    function: str

    def __post_init__(self) -> None:
        load_function(self.function)  # a bad path fails when the recipe loads

    def bind(self, context: SignalContext) -> LoadedRewardFunction:
        return LoadedRewardFunction(self.function, load_function(self.function))


@dataclass(frozen=True)
class LoadedRewardFunction:
    """``RewardFunctionSignal`` bound: the imported callable."""

    path: str
    function: RewardFunction

    def __call__(self, batch: Trajectories, name: str) -> Trajectories:
        arrays = [t.cpu().numpy() for t in transitions(batch)]
        values = np.asarray(self.function(*arrays), dtype=np.float64)
        if values.shape != (batch.num_steps,):
            raise ValidationError(
                f"steps.{name}",
                f"{self.path} returned shape {list(values.shape)}, expected [{batch.num_steps}]",
            )
        return batch.with_steps(**{name: torch.from_numpy(values).to(batch.device)})
