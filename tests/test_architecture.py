"""The import direction of docs/architecture.md, checked on every import in src/densereward, and
the world boundary: nothing outside a world's package names it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "densereward"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
WORLDS = sorted(p.name for p in (SOURCE / "worlds").iterdir() if (p / "__init__.py").exists())

ALLOWED = {
    "core": set(),
    "models": {"core"},
    "estimators": {"core"},
    "transforms": {"core"},
    "io": {"core"},
    "sandbox": {"core"},
    "signals": {"core", "models", "sandbox"},
    "evaluation": {"core", "io"},
    "labeling": {"core", "io", "signals", "models"},
    "pipeline": {"core", "signals", "transforms", "estimators"},
    "trainers": {"core", "models", "pipeline"},
    "worlds": {"core", "io", "models", "labeling", "evaluation", "pipeline", "trainers"},
    "runs": {"core", "io", "pipeline", "evaluation", "worlds", "signals"},
    "adapters": {"core", "io", "models", "signals", "transforms", "estimators", "pipeline"},
    "judges": {"core", "io", "models", "signals", "adapters"},
    "cli": {
        "core",
        "io",
        "models",
        "pipeline",
        "runs",
        "evaluation",
        "trainers",
        "adapters",
        "judges",
        "sandbox",
    },
}


def room(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return parts[0] if parts[0] != "__init__" else "package"


def imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("densereward")
        ):
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names if a.name.startswith("densereward")]
    return names


def world_of(path: Path) -> str | None:
    parts = path.relative_to(SOURCE).parts
    return parts[1] if parts[0] == "worlds" and len(parts) > 2 else None


def test_rooms_import_only_from_rooms_below() -> None:
    violations = []
    for path in sorted(SOURCE.rglob("*.py")):
        own = room(path)
        if own == "package":
            continue
        for name in imports(path):
            target = name.split(".")[1] if "." in name else "package"
            if target != own and target not in ALLOWED[own]:
                violations.append(f"{path.relative_to(SOURCE)} imports {name}")
    assert violations == []


def test_runs_cli_and_trainers_import_no_world() -> None:
    """They reach worlds through the registry: ``runs`` imports the ``worlds`` package (which
    registers every world) and nothing below it."""
    violations = [
        f"{path.relative_to(SOURCE)} imports {name}"
        for path in sorted(SOURCE.rglob("*.py"))
        if room(path) in ("runs", "cli", "trainers")
        for name in imports(path)
        if name.startswith("densereward.worlds.")
    ]
    assert violations == []


def test_no_module_outside_a_world_names_it() -> None:
    """Not as an import, nor as a string (an import path in a default, a prefix test)."""
    assert WORLDS == ["control", "flow", "reasoning"]
    violations = []
    for path in sorted(SOURCE.rglob("*.py")):
        text = path.read_text()
        for world in WORLDS:
            if world_of(path) == world:
                continue
            if re.search(rf"worlds[./]{world}\b", text):
                violations.append(f"{path.relative_to(SOURCE)} names worlds.{world}")
    assert violations == []


def test_how_to_add_section_names_files_that_exist() -> None:
    """docs/architecture.md tells a contributor which files to write for a new world, signal,
    transform or estimator; each path it names (with ``<name>`` for the new part) has a shipped
    instance, and nothing else need change (the bandit world of tests/runs proves it for a
    world)."""
    text = DOCS.read_text()
    section = text[text.index("## How to add") :]
    for heading in ("### A world", "### A signal", "### A transform", "### An estimator"):
        assert heading in section, heading
    named = re.findall(r"`src/densereward/([\w/<>.]+)`", section)
    assert named, "the section names no files"
    for template in named:
        pattern = re.escape(template).replace(re.escape("<name>"), r"[a-z_]+")
        matches = [
            p for p in SOURCE.rglob("*") if re.fullmatch(pattern, p.relative_to(SOURCE).as_posix())
        ]
        assert matches, f"no shipped file fits src/densereward/{template}"
