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
from densereward.core.components import Estimate, Estimator, Needs, SignalContext
from densereward.core.errors import ConfigError, NonFiniteError, ValidationError
from densereward.core.registry import build, lookup
from densereward.core.trajectories import VERDICT, Trajectories

RECIPE_KEYS = ("name", "description", "signals", "transforms", "estimator")


MAX_RECIPE_BYTES = 1 << 20
MAX_RECIPE_NODES = 100_000
MAX_RECIPE_DEPTH = 50


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing what makes a small file large: a document whose aliases
    expand to more than ``MAX_RECIPE_NODES`` values (nested anchors grow exponentially in
    everything that walks the result, from validation to ``yaml.safe_dump``), or that nests
    deeper than ``MAX_RECIPE_DEPTH``."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > MAX_RECIPE_DEPTH and not self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise _TooLarge(mark, f"nested deeper than {MAX_RECIPE_DEPTH}")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        expanded = _expanded_size(node)
        if expanded > MAX_RECIPE_NODES:
            raise _TooLarge(
                node.start_mark,
                f"its aliases expand to {expanded:,} values (at most {MAX_RECIPE_NODES:,})",
            )
        return self.construct_document(node)


def _expanded_size(root: yaml.Node) -> int:
    """Values the document holds once every alias is expanded: each node counted once per
    path to it, computed over the graph (aliases share nodes) without expanding it."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # on the current path: reaching one again is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # post-order: a node's size once all of its children have theirs
        node, ready = stack.pop()
        if ready:
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            sizes[id(node)] = min(total, 1 << 62)
            open_nodes.discard(id(node))
            continue
        if id(node) in sizes:
            continue
        if id(node) in open_nodes:  # `a: &a [*a]`: an anchor used inside itself
            raise _TooLarge(node.start_mark, "an alias refers to the node that contains it")
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


class _TooLarge(yaml.YAMLError):
    def __init__(self, mark: Any, problem: str) -> None:
        self.problem_mark, self.problem = mark, problem


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file; every failure is a ``ConfigError`` naming the file (and line).

    A recipe is small: more than ``MAX_RECIPE_BYTES``, aliases expanding to more than
    ``MAX_RECIPE_NODES`` values, or more than ``MAX_RECIPE_DEPTH`` levels of nesting is refused
    before it can take the memory or the stack (a few hundred bytes of nested anchors expand to
    gigabytes).
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise ConfigError(str(path), f"a recipe is at most {MAX_RECIPE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "recipe file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(str(path), f"cannot read recipe ({error})") from None
    try:
        loader = _BoundedLoader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
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

    def close(self) -> None:
        """End the signals' background work (an annotator's requests in flight): called once
        training is over, it raises what failed after the last update, which no later call
        would."""
        for signal in self.signals.values():
            close = getattr(signal, "close", None)
            if callable(close):
                close()

    def transform(
        self, batch: Trajectories, iteration: int = 0, dtype: torch.dtype | None = None
    ) -> tuple[Trajectories, list[Diagnostic]]:
        """Signals then transforms, without the estimator: the batch with every column they wrote.

        With ``dtype`` (the consumer's: a trainer's float32), every floating column of the input
        and every column a stage writes must stay finite once cast to it; the first that does
        not is a :class:`NonFiniteError` naming the stage (a reward of 1e39 is finite in float64
        and ``inf`` in float32).
        """
        diagnostics: list[Diagnostic] = []
        if dtype is not None:
            for name, column in (*batch.steps.items(), *batch.episodes.items()):
                _check_finite(batch, "the input", name, column, name in batch.steps, dtype)
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
                _check_finite(batch, stage, name, column, name in batch.steps, dtype)
                diagnostics.append(_summarize(stage, name, column))
        return batch, diagnostics

    def __call__(
        self, batch: Trajectories, iteration: int = 0, dtype: torch.dtype | None = None
    ) -> PipelineResult:
        """Signals, transforms and estimator; advantages and returns are finite (in ``dtype``
        too, when given: see :meth:`transform`)."""
        batch, diagnostics = self.transform(batch, iteration, dtype)
        estimate = checked_estimate(self.estimator, batch, dtype)
        stage = f"estimator {self.estimator.component_name}"
        diagnostics.append(_summarize(stage, "advantage", estimate.advantages))
        diagnostics.append(_summarize(stage, "return", estimate.returns))
        out = batch.with_steps(advantage=estimate.advantages, **{"return": estimate.returns})
        if estimate.keep is not None:
            out = out.with_episodes(keep=estimate.keep)
            diagnostics.append(_summarize(stage, "keep", estimate.keep))
        return PipelineResult(
            out, estimate.advantages, estimate.returns, diagnostics, estimate.keep
        )


def checked_estimate(
    estimator: Estimator, batch: Trajectories, dtype: torch.dtype | None = None
) -> Estimate:
    """``estimator(batch)``, its advantages and returns refused when not finite (in ``dtype``
    too, when given): a :class:`NonFiniteError` naming the estimator, the trajectory and the
    step. Every caller that runs an estimator outside a :class:`Pipeline` (the trainer adapters)
    goes through this."""
    estimate = estimator(batch)
    stage = f"estimator {getattr(estimator, 'component_name', type(estimator).__name__)}"
    _check_finite(batch, stage, "advantage", estimate.advantages, True, dtype)
    _check_finite(batch, stage, "return", estimate.returns, True, dtype)
    return estimate


def _check_finite(
    batch: Trajectories,
    stage: str,
    name: str,
    column: Tensor,
    per_step: bool,
    dtype: torch.dtype | None = None,
) -> None:
    if not column.is_floating_point() or column.numel() == 0:
        return
    values = column.detach()
    bad = ~torch.isfinite(values)
    cast = dtype is not None and dtype != column.dtype and not bool(bad.any())
    if cast:
        bad = ~torch.isfinite(values.to(dtype))
    rows = bad.reshape(bad.shape[0], -1) if bad.ndim > 0 else bad.reshape(1, 1)
    if bool(rows.any()):
        index = int(torch.nonzero(rows.any(1))[0, 0])
        if per_step:
            trajectory, located = batch.locate(index)
            step: int | None = located
        else:
            trajectory, step = index, None
        value = float(values.reshape(rows.shape)[index][rows[index]][0])
        problem = (
            f"{stage} produced {value:.6g}, which is not finite in "
            f"{str(dtype).replace('torch.', '')} (the trainer's dtype)"
            if cast
            else f"{stage} produced a non-finite value ({value})"
        )
        raise NonFiniteError(name, problem, trajectory=trajectory, step=step)


def _summarize(stage: str, name: str, column: Tensor) -> Diagnostic:
    values = column.detach().to(torch.float64).flatten()
    if values.numel() == 0:
        return Diagnostic(stage, name, 0.0, 0.0, 0.0, 0.0)
    std = float(values.std()) if values.numel() > 1 else 0.0
    return Diagnostic(
        stage, name, float(values.mean()), std, float(values.min()), float(values.max())
    )
