"""Every numeric parameter of every component has a range, and a recipe out of range is refused
when it loads (``densereward recipe``), with one line naming the parameter."""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import pytest
from typer.testing import CliRunner

import densereward.pipeline
import densereward.worlds  # registers the worlds
from densereward.cli import app
from densereward.core.registry import Component, build, coerce, components, lookup

RECIPES = Path(densereward.pipeline.__file__).parent / "recipes"
REQUIRED: dict[tuple[str, str], dict[str, Any]] = {
    ("signal", "reward_function"): {"function": "operator:add"},
    ("transform", "combine"): {"weights": {"reward": 1.0}},
    ("transform", "constrained"): {"constraints": {"length": 0.5}},
    ("signal", "reward_model"): {"path": "reward-model"},
    ("signal", "reward_code"): {
        "file": str(Path(__file__).parents[2] / "examples/text2reward/doorkey_potential.py")
    },
}
"""Parameters without a default, given to build a component."""


def shipped() -> list[Component]:
    """The components densereward registers (not those a test or a plugin adds)."""
    return [c for c in components(None) if c.cls.__module__.startswith("densereward.")]


def numbers(annotation: Any) -> Iterator[tuple[type, tuple[Any, ...]]]:
    """``(int or float, its Annotated metadata)`` for every number inside ``annotation``
    (through ``X | None``, ``dict[str, X]``, ``list[X]``...); bare numbers have ``()``."""
    if get_origin(annotation) is Annotated:
        base = get_args(annotation)[0]
        if base in (int, float):
            yield base, annotation.__metadata__
        else:
            yield from numbers(base)
        return
    if annotation in (int, float):
        yield annotation, ()
        return
    for argument in get_args(annotation):
        yield from numbers(argument)


def numeric_fields(component: Component) -> Iterator[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(component.cls, include_extras=True)
    for field in dataclasses.fields(component.cls):
        if field.init and any(True for _ in numbers(hints[field.name])):
            yield field, hints[field.name]


def ids(component: Component) -> str:
    return f"{component.kind}:{component.name}"


def test_every_numeric_parameter_has_a_range() -> None:
    bare = [
        f"{ids(component)}.{field.name}: {annotation}"
        for component in shipped()
        for field, annotation in numeric_fields(component)
        if any(not bounds for _, bounds in numbers(annotation))
    ]
    assert not bare, "int/float parameters without a core.parameters type:\n" + "\n".join(bare)


@pytest.mark.parametrize(
    "component", [c for c in shipped() if any(True for _ in numeric_fields(c))], ids=ids
)
def test_every_default_lies_in_its_range(component: Component) -> None:
    required = REQUIRED.get((component.kind, component.name), {})
    defaults: dict[str, Any] = {}
    for field in dataclasses.fields(component.cls):
        if not field.init:
            continue
        if field.default is not dataclasses.MISSING:
            defaults[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            defaults[field.name] = field.default_factory()
        else:
            assert field.name in required, f"give {ids(component)}.{field.name} in REQUIRED"
    for field, annotation in numeric_fields(component):
        value = required.get(field.name, defaults.get(field.name))
        assert all(bounds for _, bounds in numbers(annotation)), f"{field.name} has no range"
        assert coerce(value, annotation, field.name) == value
    # Every default given explicitly goes through the same checks as a recipe's values.
    built = build(component.kind, {"kind": component.name, **defaults, **required})
    assert built == build(component.kind, {"kind": component.name, **required})


def test_components_lists_the_ranges() -> None:
    parameters = {name: kind for name, kind, _ in lookup("estimator", "gae").parameters()}
    assert parameters["gamma"] == parameters["lam"] == "float in [0, 1]"
    parameters = {name: kind for name, kind, _ in lookup("transform", "anneal").parameters()}
    assert parameters["horizon"] == "int >= 1"


def pipeline(transform: str, estimator: str = "{kind: gae}") -> str:
    return f"name: x\ntransforms: [{transform}]\nestimator: {estimator}\n"


def shipped_recipe(name: str, old: str, new: str) -> str:
    text = (RECIPES / name).read_text(encoding="utf-8")
    assert old in text
    return text.replace(old, new, 1)


OUT_OF_RANGE = {
    "discount_above_1": (
        pipeline("{kind: potential, gamma: 1.5}"),
        r"transforms\[0\]\.gamma: must be <= 1, got 1\.5",
    ),
    "negative_lambda": (
        pipeline("{kind: clip}", "{kind: gae, lam: -0.1}"),
        r"estimator\.lam: must be >= 0, got -0\.1",
    ),
    "zero_eps": (
        pipeline("{kind: normalize, eps: 0}"),
        r"transforms\[0\]\.eps: must be > 0, got 0\.0",
    ),
    "zero_horizon": (
        pipeline("{kind: anneal, horizon: 0}"),
        r"transforms\[0\]\.horizon: must be >= 1, got 0",
    ),
    "negative_learning_rate": (
        pipeline("{kind: blend, learning_rate: -1}"),
        r"transforms\[0\]\.learning_rate: must be > 0, got -1\.0",
    ),
    "nan_discount": (
        pipeline("{kind: blend, gamma: .nan}"),
        r"transforms\[0\]\.gamma: must be a finite number, got nan",
    ),
    "infinite_weight": (
        pipeline("{kind: combine, weights: {reward: 1.0, bonus: .inf}}"),
        r"transforms\[0\]\.weights\.bonus: must be a finite number, got inf",
    ),
    "blend_bounds_crossed": (
        pipeline("{kind: blend, minimum: 1.0, maximum: 0.5}"),
        r"transforms\[0\]\.maximum: must be at least minimum",
    ),
    "blend_starts_outside_its_bounds": (
        pipeline("{kind: blend, initial: 3.0}"),
        r"transforms\[0\]\.initial: must lie in \[minimum, maximum\]",
    ),
    "negative_max_error": (
        pipeline("{kind: return_decomposition, max_error: -1}"),
        r"transforms\[0\]\.max_error: must be >= 0, got -1\.0",
    ),
    "zero_preference_sharpness": (
        pipeline("{kind: par, k: 0}"),
        r"transforms\[0\]\.k: must be > 0, got 0\.0",
    ),
    "prof_keeps_none": (
        pipeline("{kind: clip}", "{kind: prof, keep: 0}"),
        r"estimator\.keep: must be >= 1, got 0",
    ),
    "negative_kl_coefficient": (
        pipeline("{kind: clip}", "{kind: reinforce_pp, kl_coef: -0.1}"),
        r"estimator\.kl_coef: must be >= 0, got -0\.1",
    ),
    "step_grpo_discount_above_1": (
        pipeline("{kind: clip}", "{kind: step_grpo, gamma: 1.5}"),
        r"estimator\.gamma: must be <= 1, got 1\.5",
    ),
    "no_evaluation_episodes": (
        shipped_recipe("doorkey.yaml", "success_threshold: 0.9", "evaluation_episodes: 0"),
        r"world\.evaluation_episodes: must be >= 1, got 0",
    ),
    "no_demonstrations": (
        shipped_recipe("doorkey.yaml", "demos: 20", "demos: 0"),
        r"methods\.progress_potential\b.*signals\.potential\.demos: must be >= 1, got 0",
    ),
    "infinite_bonus": (
        shipped_recipe("doorkey.yaml", "scale: 0.005", "scale: .inf"),
        r"methods\.count_bonus\b.*signals\.bonus\.scale: must be a finite number, got inf",
    ),
    "operand_too_small": (
        shipped_recipe("reasoning.yaml", "max_ops: 3", "max_ops: 3, max_operand: 1"),
        r"world\.max_operand: must be >= 2, got 1",
    ),
    "zero_sft_learning_rate": (
        shipped_recipe("reasoning.yaml", "max_ops: 3", "max_ops: 3, sft_learning_rate: 0"),
        r"world\.sft_learning_rate: must be > 0, got 0\.0",
    ),
}


@pytest.mark.parametrize("case", sorted(OUT_OF_RANGE))
def test_recipe_refuses_a_parameter_out_of_range(tmp_path: Path, case: str) -> None:
    text, pattern = OUT_OF_RANGE[case]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(app, ["recipe", str(recipe)])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.exception, result.stdout, result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"error: {recipe}: "), lines[0]
    assert re.search(pattern, lines[0]), lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_the_shipped_recipes_lie_in_range(recipe: str) -> None:
    result = CliRunner().invoke(app, ["recipe", str(RECIPES / recipe)])
    assert result.exit_code == 0, (result.exception, result.stderr)
