"""Model-written reward code (Text2Reward, Eureka), checked and then run only in the sandbox.

A reward file defines ``compute_reward(obs, act, next_obs, terminated, truncated)`` over a batch of
``n`` transitions (NumPy arrays, the ``reward_function`` signal's form) and returns ``n`` finite
rewards. Unlike ``reward_function``, which imports trusted code into the trainer's process, this
code never runs here: :func:`check_reward_source` reads it as a syntax tree (it parses, defines
the function at top level, and the function takes the five arguments), and every call runs it in
a fresh :class:`~densereward.sandbox.Sandbox` with ``numpy`` the one package it may import. The
transitions go in as an ``.npz`` file, the rewards come back as JSON, and their shape and
finiteness are checked here.
"""

from __future__ import annotations

import ast
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from annotated_types import Interval

from densereward.core.components import Signal, SignalContext
from densereward.core.errors import ConfigError, DenseRewardError, NonFiniteError, ValidationError
from densereward.core.layouts import transitions
from densereward.core.parameters import Positive
from densereward.core.registry import register
from densereward.core.trajectories import Trajectories
from densereward.sandbox import Program, Sandbox
from densereward.signals.functions import REWARD_ARGUMENTS

MODULE = "reward_code"
"""the reward file's module name inside the sandbox"""

_DRIVER = f"""
import numpy as np
import {MODULE}


def main(function):
    data = np.load("transitions.npz")
    arrays = [data[name] for name in {list(REWARD_ARGUMENTS)!r}]
    values = np.asarray(getattr({MODULE}, function)(*arrays), dtype=np.float64)
    return {{"shape": list(values.shape), "values": values.ravel().tolist()}}
"""


class RewardCodeError(DenseRewardError, ValueError):
    """Reward code that cannot be used: it does not parse, lacks the function, has the wrong
    signature, raised, hit a sandbox limit, or returned the wrong shape or a non-finite value.
    ``stage`` is ``"syntax"``, ``"signature"`` or ``"run"``; the message is one line naming the
    file; ``transition`` is the index of the first non-finite reward, if that is what it was."""

    def __init__(self, where: str, stage: str, problem: str, transition: int | None = None) -> None:
        self.where, self.stage, self.problem, self.transition = where, stage, problem, transition
        super().__init__(f"{where}: {problem}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.where, self.stage, self.problem, self.transition))


def check_reward_source(source: str, where: str, function: str = "compute_reward") -> None:
    """Raise :class:`RewardCodeError` unless ``source`` parses and defines ``function`` at top
    level taking ``(obs, act, next_obs, terminated, truncated)`` positionally. Nothing runs."""
    try:
        tree = ast.parse(source, filename=where)
    except SyntaxError as error:
        raise RewardCodeError(
            where, "syntax", f"line {error.lineno}: syntax error: {error.msg}"
        ) from None
    definitions = [
        node
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function
    ]
    if not definitions:
        raise RewardCodeError(where, "signature", f"defines no top-level function {function!r}")
    definition = definitions[-1]  # the last definition is the one a module ends up with
    if isinstance(definition, ast.AsyncFunctionDef):
        raise RewardCodeError(where, "signature", f"{function} is async; it must return rewards")
    arguments = definition.args
    positional = len(arguments.posonlyargs) + len(arguments.args)
    required = positional - len(arguments.defaults)
    required_keywords = [
        a.arg
        for a, default in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True)
        if default is None
    ]
    fits = (positional >= 5 or arguments.vararg is not None) and required <= 5
    if not fits or required_keywords:
        raise RewardCodeError(
            where,
            "signature",
            f"line {definition.lineno}: {function}({_signature(arguments)}) cannot be called as "
            f"{function}({', '.join(REWARD_ARGUMENTS)})",
        )


def _signature(arguments: ast.arguments) -> str:
    names = [a.arg for a in (*arguments.posonlyargs, *arguments.args)]
    if arguments.vararg is not None:
        names.append(f"*{arguments.vararg.arg}")
    names += [a.arg for a in arguments.kwonlyargs]
    return ", ".join(names)


def run_reward_code(
    source: str,
    arrays: tuple[np.ndarray, ...],
    sandbox: Sandbox,
    where: str,
    function: str = "compute_reward",
) -> np.ndarray:
    """``function(*arrays)`` of the reward code ``source``, run in ``sandbox``: ``[n]`` finite
    float64 rewards for ``n`` transitions, or a :class:`RewardCodeError` saying what went wrong."""
    n = len(arrays[0])
    buffer = io.BytesIO()
    named: dict[str, np.ndarray] = dict(zip(REWARD_ARGUMENTS, arrays, strict=True))
    np.savez(buffer, **named)  # type: ignore[arg-type]  # numpy's stub types one keyword
    program = Program(
        _DRIVER,
        "main",
        (function,),
        name="driver.py",
        files={f"{MODULE}.py": source, "transitions.npz": buffer.getvalue()},
    )
    result = sandbox.run(program)
    if not result.ok:
        raised = (result.error or "").replace(f"module '{MODULE}'", "the reward file")
        stopped = f"stopped by the sandbox's {result.limit} limit: " if result.limit else ""
        raise RewardCodeError(where, "run", f"{function} failed: {stopped}{raised}")
    shape, values = result.value["shape"], np.asarray(result.value["values"], dtype=np.float64)
    if shape != [n]:
        raise RewardCodeError(
            where, "run", f"{function} returned shape {shape} for {n} transitions, expected [{n}]"
        )
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise RewardCodeError(
            where,
            "run",
            f"{function} returned a non-finite value ({values[bad[0]]}) for transition "
            f"{int(bad[0])} of {n}",
            transition=int(bad[0]),
        )
    return values


def reward_sandbox(timeout: float, memory_mb: int, n: int) -> Sandbox:
    """The sandbox reward code runs in: ``numpy`` allowed, room for ``n`` rewards in the reply."""
    return Sandbox(
        timeout=timeout,
        memory_mb=memory_mb,
        max_processes=8,
        packages=("numpy",),
        result_bytes=max(1 << 20, 32 * n + 4096),
    )


@register("signal", "reward_code", paper="Text2Reward (Xie et al. 2024); Eureka (Ma et al. 2024)")
@dataclass(frozen=True)
class RewardCodeSignal(Signal):
    """Step column ``<name>`` from untrusted reward code in ``file``, run in the sandbox.

    The file's ``function(obs, act, next_obs, terminated, truncated)`` gets the batch's
    transitions (step columns ``obs`` and ``action``, per-trajectory ``final_obs``) as NumPy
    arrays and returns one reward per transition. The file is read and checked (syntax, function,
    signature) when the recipe loads; each batch runs it in a fresh sandbox with ``timeout``
    seconds and ``memory_mb`` MiB, and a failure, a wrong shape or a non-finite reward stops the
    run with one line naming the file.
    """

    file: str
    function: str = "compute_reward"
    timeout: Positive = 30.0
    memory_mb: Annotated[int, Interval(ge=16)] = 1024

    def __post_init__(self) -> None:
        source = read_reward_file(self.file, "signals.reward_code.file")
        check_reward_source(source, self.file, self.function)

    def bind(self, context: SignalContext) -> SandboxedRewardCode:
        source = read_reward_file(self.file, "signals.reward_code.file")
        return SandboxedRewardCode(self, source)


def read_reward_file(file: str, field: str) -> str:
    """The text of the reward file ``file``; a one-line ``ConfigError`` naming ``field``."""
    path = Path(file)
    if not path.is_file():
        raise ConfigError(field, f"{file}: no such file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(field, f"{file}: not UTF-8 text: {error.reason}") from None


@dataclass(frozen=True)
class SandboxedRewardCode:
    """``RewardCodeSignal`` bound: the file's text, run per batch in a fresh sandbox."""

    signal: RewardCodeSignal
    source: str

    def __call__(self, batch: Trajectories, name: str) -> Trajectories:
        arrays = tuple(t.cpu().numpy() for t in transitions(batch))
        sandbox = reward_sandbox(self.signal.timeout, self.signal.memory_mb, batch.num_steps)
        try:
            values = run_reward_code(
                self.source, arrays, sandbox, self.signal.file, self.signal.function
            )
        except RewardCodeError as error:
            if error.transition is not None:
                trajectory, step = batch.locate(error.transition)
                raise NonFiniteError(
                    name,
                    f"signals.{name} reward_code: {error}",
                    trajectory=trajectory,
                    step=step,
                ) from None
            raise ValidationError(f"steps.{name}", str(error)) from None
        return batch.with_steps(**{name: torch.from_numpy(values).to(batch.device)})
