"""Recipes and the reward pipeline they describe: transforms, then one estimator.

A recipe is data (YAML) naming registered components with typed parameters::

    name: prm-clip-delta
    transforms:
      - {kind: clip_delta, source: prm, eta: 0.5}
      - {kind: combine, weights: {prm: 1.0}, target: reward}
    estimator: {kind: step_grpo, process: reward, outcome_weight: 1.0}

The same :class:`Pipeline` object runs from Python on a ``Trajectories`` batch and from the CLI.
Its signals are bound to a ``SignalContext`` once, when the pipeline is made: a world hands it the
models, demonstrations or tokenizer its signals declared they need (``Recipe.needs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

# Importing the packages registers their components (each imports all of its modules).
import densereward.estimators
import densereward.signals
import densereward.transforms  # noqa: F401
from densereward.core.components import Estimator, Needs, SignalContext
from densereward.core.errors import ConfigError, ValidationError
from densereward.core.registry import build, lookup
from densereward.core.trajectories import VERDICT, Trajectories

RECIPE_KEYS = ("name", "description", "signals", "transforms", "estimator")


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file; every failure is a ``ConfigError`` naming the file (and line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "recipe file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(str(path), f"cannot read recipe ({error})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(where, f"invalid YAML: {problem}") from None


def check_keys(data: Any, known: tuple[str, ...], source: str, what: str) -> Mapping[str, Any]:
    """``data`` must be a mapping whose keys are all in ``known``."""
    if not isinstance(data, Mapping):
        raise ConfigError(source, f"{what} must be a mapping (keys: {', '.join(known)})")
    for key in data:
        if key not in known:
            raise ConfigError(f"{source}: {key}", f"unknown {what} key (known: {', '.join(known)})")
    return data


@dataclass(frozen=True)
class Recipe:
    """A validated recipe: component specs plus the objects built from them."""

    name: str
    estimator: Mapping[str, Any]
    transforms: tuple[Mapping[str, Any], ...] = ()
    description: str = ""
    signals: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @staticmethod
    def from_dict(data: Any, source: str = "recipe") -> Recipe:
        data = check_keys(data, RECIPE_KEYS, source, "recipe")
        if "estimator" not in data:
            raise ConfigError(source, "missing 'estimator'")
        transforms = data.get("transforms") or []
        if not isinstance(transforms, list):
            raise ConfigError(f"{source}: transforms", "must be a list of components")
        name = data.get("name", Path(source).stem)
        if not isinstance(name, str):
            raise ConfigError(f"{source}: name", "must be a string")
        signals = data.get("signals") or {}
        if not isinstance(signals, Mapping):
            raise ConfigError(f"{source}: signals", "must map column names to signal components")
        recipe = Recipe(
            name,
            data["estimator"],
            tuple(transforms),
            str(data.get("description", "")),
            dict(signals),
        )
        recipe.build(source)  # validate every component now, not halfway through a run
        return recipe

    @staticmethod
    def from_yaml(path: str | Path) -> Recipe:
        return Recipe.from_dict(load_yaml(path), str(path))

    def build(self, source: str = "recipe") -> tuple[dict[str, Any], list[Any], Any]:
        signals = {
            name: build("signal", spec, f"{source}: signals.{name}")
            for name, spec in self.signals.items()
        }
        transforms = [
            build("transform", spec, f"{source}: transforms[{i}]")
            for i, spec in enumerate(self.transforms)
        ]
        return signals, transforms, build("estimator", self.estimator, f"{source}: estimator")

    def needs(self) -> Needs:
        """Everything its signals need of their context, together."""
        signals, _, _ = self.build()
        each = [signal.needs() for signal in signals.values()]
        return Needs(
            models=tuple(dict.fromkeys(name for need in each for name in need.models)),
            demonstrations=any(need.demonstrations for need in each),
            captions=any(need.captions for need in each),
            text=any(need.text for need in each),
        )

    @property
    def selects_trajectories(self) -> bool:
        """Whether its estimator may drop trajectories from the policy loss (``Estimate.keep``)."""
        estimator: type[Estimator] = lookup("estimator", self.estimator["kind"]).cls
        return estimator.selects_trajectories

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "signals": {name: dict(spec) for name, spec in self.signals.items()},
            "transforms": [dict(t) for t in self.transforms],
            "estimator": dict(self.estimator),
        }


@dataclass(frozen=True)
class Diagnostic:
    """Summary of one column after one pipeline stage."""

    stage: str
    column: str
    mean: float
    std: float
    minimum: float
    maximum: float


@dataclass(frozen=True)
class PipelineResult:
    trajectories: Trajectories
    """The input batch with every transformed column, plus step columns ``advantage``, ``return``."""
    advantages: Tensor
    returns: Tensor
    diagnostics: list[Diagnostic] = field(default_factory=list)
    keep: Tensor | None = None
    """Trajectories the policy loss should see, when the estimator selects (also the episode
    column ``keep`` of ``trajectories``); ``None``: all."""


class Pipeline:
    """Signals, transforms then an estimator, callable on a ``Trajectories`` batch.

    >>> recipe = Recipe.from_dict({"transforms": [{"kind": "clip", "source": "prm", "eta": 0.5}],
    ...                            "estimator": {"kind": "step_grpo", "process": "prm"}})
    >>> batch = Trajectories.from_episodes({"prm": [[0.9, 0.1], [0.8]]},
    ...                                    {"outcome": [0.0, 1.0], "group": [0, 0]})
    >>> result = Pipeline(recipe)(batch)
    >>> [round(x, 2) for x in result.trajectories.step("prm").tolist()]
    [0.0, -0.4, 0.0]
    """

    def __init__(self, recipe: Recipe, context: SignalContext | None = None) -> None:
        self.recipe = recipe
        self.specs, self.transforms, self.estimator = recipe.build()
        # bound once: models looked up, potentials fitted, counters started (``Signal.bind``)
        context = context or SignalContext()
        self.signals = {name: spec.bind(context) for name, spec in self.specs.items()}

    @staticmethod
    def from_yaml(path: str | Path) -> Pipeline:
        return Pipeline(Recipe.from_yaml(path))

    def transform(
        self, batch: Trajectories, iteration: int = 0
    ) -> tuple[Trajectories, list[Diagnostic]]:
        """Signals then transforms, without the estimator: the batch with every column they wrote."""
        diagnostics: list[Diagnostic] = []
        stages: list[tuple[str, Any]] = [
            (
                f"signals.{name} {self.specs[name].component_name}",
                lambda b, i, s=signal, n=name: s(b, n),
            )
            for name, signal in self.signals.items()
        ] + [
            (f"transforms[{index}] {transform.component_name}", transform)
            for index, transform in enumerate(self.transforms)
        ]
        for stage, apply in stages:
            before_steps, before_episodes = dict(batch.steps), dict(batch.episodes)
            batch = apply(batch, iteration)
            changed = [
                (name, column)
                for name, column in batch.steps.items()
                if before_steps.get(name) is not column
            ] + [
                (name, column)
                for name, column in batch.episodes.items()
                if before_episodes.get(name) is not column
            ]
            verdict = before_episodes.get(VERDICT)
            if verdict is not None and batch.episodes.get(VERDICT) is not verdict:
                # a verdict is the grader's; a stage that rewrote it would change what is logged
                # as accuracy and what every gate after it reads
                raise ValidationError(VERDICT, f"{stage} changed the verdict, which is read-only")
            for name, column in changed:
                _check_finite(batch, stage, name, column, name in batch.steps)
                diagnostics.append(_summarize(stage, name, column))
        return batch, diagnostics

    def __call__(self, batch: Trajectories, iteration: int = 0) -> PipelineResult:
        batch, diagnostics = self.transform(batch, iteration)
        estimate = self.estimator(batch)
        stage = f"estimator {self.estimator.component_name}"
        _check_finite(batch, stage, "advantage", estimate.advantages, True)
        diagnostics.append(_summarize(stage, "advantage", estimate.advantages))
        diagnostics.append(_summarize(stage, "return", estimate.returns))
        out = batch.with_steps(advantage=estimate.advantages, **{"return": estimate.returns})
        if estimate.keep is not None:
            out = out.with_episodes(keep=estimate.keep)
            diagnostics.append(_summarize(stage, "keep", estimate.keep))
        return PipelineResult(
            out, estimate.advantages, estimate.returns, diagnostics, estimate.keep
        )


def _check_finite(
    batch: Trajectories, stage: str, name: str, column: Tensor, per_step: bool
) -> None:
    if not column.is_floating_point():
        return
    bad = ~torch.isfinite(column)
    if bad.ndim > 1:
        bad = bad.flatten(1).any(1)
    if bool(bad.any()):
        index = int(torch.nonzero(bad)[0, 0])
        if per_step:
            trajectory = int(torch.searchsorted(batch.offsets, index, right=True)) - 1
            step: int | None = index - int(batch.offsets[trajectory])
        else:
            trajectory, step = index, None
        raise ValidationError(
            name, f"{stage} produced a non-finite value", trajectory=trajectory, step=step
        )


def _summarize(stage: str, name: str, column: Tensor) -> Diagnostic:
    values = column.detach().to(torch.float64).flatten()
    if values.numel() == 0:
        return Diagnostic(stage, name, 0.0, 0.0, 0.0, 0.0)
    std = float(values.std()) if values.numel() > 1 else 0.0
    return Diagnostic(
        stage, name, float(values.mean()), std, float(values.min()), float(values.max())
    )
