"""Run recipes: a world, one of its trainers, seeds, and the methods to compare.

Each method is a reward pipeline (signals, transforms, estimator)::

    name: doorkey-5x5
    world: {kind: control, env_id: MiniGrid-DoorKey-5x5-v0}
    trainer: {kind: ppo, total_steps: 60000, learning_rate: 0.001}
    seeds: [0, 1, 2]
    estimator: {kind: gae, gamma: 0.99, lam: 0.95}      # shared by methods unless they set one
    methods:
      sparse: {}
      progress_potential:
        signals: {potential: {kind: progress_model}}
        transforms: [{kind: potential, potential: potential}]

Everything is checked when the recipe loads, against what the world declares: its parameters,
its trainers' parameters, what its methods' signals need (``World.offers``), and whether its
trainer honours an estimator that selects trajectories (``World.trains_on_selection``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import densereward.worlds  # noqa: F401  (registers every world; none is named here)
from densereward.core.components import World
from densereward.core.errors import ConfigError
from densereward.core.registry import build, build_config, coerce
from densereward.pipeline import Recipe, check_keys, load_yaml

RUN_KEYS = ("name", "description", "world", "trainer", "seeds", "estimator", "methods")
RECIPES = Path(__file__).resolve().parent.parent / "recipes"
DEFAULT_RUN = "doorkey"
METHOD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
"""Method names become file names in the run folder."""


def resolve_recipe(name_or_path: str | Path) -> Path:
    """A recipe file: a path, or the name of one shipped in ``densereward/recipes``."""
    path = Path(name_or_path)
    if path.exists() or path.suffix in (".yaml", ".yml"):
        return path
    builtin = RECIPES / f"{name_or_path}.yaml"
    if builtin.exists():
        return builtin
    known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.yaml")))
    raise ConfigError(
        str(name_or_path), f"no such recipe file or built-in recipe (built-in: {known})"
    )


@dataclass(frozen=True)
class RunRecipe:
    """A validated run recipe."""

    name: str
    description: str
    world: World
    trainer: Any
    """The config dataclass of one of ``world.trainers``."""
    seeds: tuple[int, ...]
    methods: dict[str, Recipe]

    @property
    def trainer_kind(self) -> str:
        return next(k for k, cls in self.world.trainers.items() if isinstance(self.trainer, cls))

    @property
    def budget(self) -> int:
        """Units of the world's progress axis one run consumes."""
        return self.world.budget(self.trainer)

    def with_length(self, length: int) -> RunRecipe:
        """The same recipe with the trainer's length field (``total_steps``, ``updates``...) set."""
        field = type(self.trainer).length
        try:
            trainer = dataclasses.replace(self.trainer, **{field: length})
        except ConfigError as error:
            raise ConfigError(f"trainer.{error.path}", error.problem) from None
        return dataclasses.replace(self, trainer=trainer)

    @staticmethod
    def from_dict(data: Any, source: str = "recipe") -> RunRecipe:
        data = check_keys(data, RUN_KEYS, source, "run-recipe")
        world: World = build("world", data.get("world"), f"{source}: world")
        trainer = _trainer(world, data.get("trainer"), f"{source}: trainer")
        seeds = coerce(data.get("seeds", [0]), list[int], f"{source}: seeds")
        check_seeds(seeds, f"{source}: seeds")
        methods_spec = data.get("methods")
        if not isinstance(methods_spec, Mapping) or not methods_spec:
            raise ConfigError(f"{source}: methods", "name at least one method")
        estimator = data.get("estimator", type(trainer).estimator)
        methods = {}
        offers = world.offers()
        for name, spec in methods_spec.items():
            where = f"{source}: methods.{name}"
            if not isinstance(name, str):
                raise ConfigError(where, f"a method name is a string, got {type(name).__name__}")
            if not METHOD_NAME.fullmatch(name):
                raise ConfigError(where, "a method name is letters, digits, '_', '-' and '.'")
            if spec is not None and not isinstance(spec, Mapping):
                raise ConfigError(where, "must be a mapping (a recipe), or {}")
            spec = dict(spec or {})
            spec.setdefault("estimator", estimator)
            spec.setdefault("name", name)
            recipe = Recipe.from_dict(spec, where)
            if recipe.selects_trajectories and not world.trains_on_selection:
                raise ConfigError(
                    f"{where}.estimator",
                    f"selects trajectories, which the {world.component_name} world's trainer "  # type: ignore[attr-defined]
                    "does not support (it trains on every step)",
                )
            unmet = recipe.needs().unmet(offers)
            if unmet:
                raise ConfigError(f"{where}.signals", unmet)
            methods[name] = recipe
        return RunRecipe(
            str(data.get("name", Path(source).stem)),
            str(data.get("description", "")),
            world,
            trainer,
            tuple(seeds),
            methods,
        )

    @staticmethod
    def from_yaml(path: str | Path) -> RunRecipe:
        return RunRecipe.from_dict(load_yaml(path), str(path))

    def resolved(self) -> dict[str, Any]:
        """The recipe with every parameter of every part, defaults included."""
        return {
            "name": self.name,
            "description": self.description,
            "world": {"kind": self.world.component_name, **_parameters(self.world)},  # type: ignore[attr-defined]
            "trainer": {"kind": self.trainer_kind, **_parameters(self.trainer, ("seed",))},
            "seeds": list(self.seeds),
            "methods": {name: _resolved_recipe(recipe) for name, recipe in self.methods.items()},
        }


def check_seeds(seeds: list[int], where: str) -> None:
    if not seeds:
        raise ConfigError(where, "name at least one seed")
    if min(seeds) < 0:
        raise ConfigError(where, f"seeds are non-negative, got {min(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(where, "a seed is named twice (its runs would overwrite each other)")


def _trainer(world: World, spec: Any, where: str) -> Any:
    spec = dict(spec or {}) if isinstance(spec, Mapping) or spec is None else spec
    if not isinstance(spec, dict):
        raise ConfigError(where, "must be a mapping with a 'kind'")
    kinds = list(world.trainers)
    kind = spec.pop("kind", kinds[0])
    if kind not in world.trainers:
        raise ConfigError(
            f"{where}.kind",
            f"the {world.component_name} world trains with {', '.join(map(repr, kinds))}, "  # type: ignore[attr-defined]
            f"not {kind!r}",
        )
    cls: type = world.trainers[kind]
    trainer: Any = build_config(
        cls, {**world.trainer_defaults(), **spec}, where, kind.upper(), ("seed",)
    )
    try:
        world.check(trainer)
    except ConfigError as error:
        raise ConfigError(f"{where}.{error.path}", error.problem) from None
    return trainer


def _parameters(config: Any, hidden: tuple[str, ...] = ()) -> dict[str, Any]:
    """A config's parameters: its init fields, but those in ``hidden`` (a trainer's seed, which
    a run sets per seed)."""
    return {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.init and f.name not in hidden
    }


def _resolved_recipe(recipe: Recipe) -> dict[str, Any]:
    """Every component with every parameter, defaults included."""
    signals, transforms, estimator = recipe.build()

    def spec(component: Any) -> dict[str, Any]:
        return {"kind": component.component_name, **_parameters(component)}

    return {
        "signals": {name: spec(s) for name, s in signals.items()},
        "transforms": [spec(t) for t in transforms],
        "estimator": spec(estimator),
    }
