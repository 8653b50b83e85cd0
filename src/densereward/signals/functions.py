"""Step rewards from any batched reward function, named in a recipe by its import path."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densereward.core.components import Signal, SignalContext
from densereward.core.errors import ConfigError, NonFiniteError, ValidationError
from densereward.core.layouts import transitions
from densereward.core.registry import register
from densereward.core.trajectories import Trajectories

RewardFunction = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], Any]
"""``R(obs, act, next_obs, terminated, truncated) -> [n]`` over a batch of transitions."""


REWARD_ARGUMENTS = ("obs", "act", "next_obs", "terminated", "truncated")


def load_function(path: str, field: str = "function", arguments: tuple[str, ...] = ()) -> Any:
    """``"package.module:name"`` (or ``"path/to/file.py:name"``) -> the callable it names;
    errors name ``field`` and, once the module is found, its file. With ``arguments``, the
    callable must accept that many positional arguments.

    >>> load_function("math:hypot", arguments=("x", "y")).__name__
    'hypot'
    """
    module_name, _, attribute = path.rpartition(":")
    if not module_name or not attribute:
        raise ConfigError(field, f"expected 'package.module:name', got {path!r}")
    if module_name.endswith(".py"):
        module = _import_file(module_name, field)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ConfigError(field, f"cannot import {module_name!r} ({error})") from None
    where = getattr(module, "__file__", None) or module_name
    if not hasattr(module, attribute):
        raise ConfigError(field, f"{where}: defines no {attribute!r}")
    function = getattr(module, attribute)
    if not callable(function):
        raise ConfigError(field, f"{where}: {path!r} is not a callable")
    if arguments:
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return function  # a builtin without a signature: its first call will tell
        try:
            signature.bind(*arguments)
        except TypeError:
            raise ConfigError(
                field,
                f"{where}: {attribute}{signature} cannot be called as "
                f"{attribute}({', '.join(arguments)})",
            ) from None
    return function


def _import_file(file: str, field: str) -> Any:
    """Import the Python file ``file`` as a module of its own (cached by its path)."""
    resolved = Path(file).resolve()
    if not resolved.is_file():
        raise ConfigError(field, f"{file}: no such file")
    name = f"densereward_user_{abs(hash(str(resolved)))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the user's module failed to load: say where and how, once
        raise ConfigError(
            field, f"{file}: importing it failed: {type(error).__name__}: {error}"
        ) from None
    sys.modules[name] = module
    return module


@register("signal", "reward_function", paper="imitation's reward-function convention")
@dataclass(frozen=True)
class RewardFunctionSignal(Signal):
    """Step column from a batched ``R(obs, act, next_obs, terminated, truncated)`` (NumPy arrays).

    Reads step columns ``obs`` and ``action`` and the per-trajectory ``final_obs``; any
    ``imitation`` reward net fits through ``lambda o, a, n, te, tr: net.predict(o, a, n, te | tr)``.
    """

    function: str

    def __post_init__(self) -> None:
        # a bad path, a missing function or a wrong signature fails when the recipe loads
        load_function(self.function, arguments=REWARD_ARGUMENTS)

    def bind(self, context: SignalContext) -> LoadedRewardFunction:
        return LoadedRewardFunction(
            self.function, load_function(self.function, arguments=REWARD_ARGUMENTS)
        )


@dataclass(frozen=True)
class LoadedRewardFunction:
    """``RewardFunctionSignal`` bound: the imported callable."""

    path: str
    function: RewardFunction

    def __call__(self, batch: Trajectories, name: str) -> Trajectories:
        arrays = [t.cpu().numpy() for t in transitions(batch)]
        try:
            values = np.asarray(self.function(*arrays), dtype=np.float64)
        except Exception as error:  # the user's function: say which and how, in one line
            raise ValidationError(
                f"steps.{name}", f"{self.path} raised {type(error).__name__}: {error}"
            ) from None
        if values.shape != (batch.num_steps,):
            raise ValidationError(
                f"steps.{name}",
                f"{self.path} returned shape {list(values.shape)}, expected [{batch.num_steps}]",
            )
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            # located like the pipeline's own check, and naming the user's function
            index = int(bad[0])
            trajectory, step = batch.locate(index)
            raise NonFiniteError(
                name,
                f"signals.{name} reward_function produced a non-finite value ({values[index]}) "
                f"in {self.path}",
                trajectory=trajectory,
                step=step,
            )
        return batch.with_steps(**{name: torch.from_numpy(values).to(batch.device)})
