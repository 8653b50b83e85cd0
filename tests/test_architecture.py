"""The import direction of docs/architecture.md, checked on every import in src/densereward."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "densereward"

ALLOWED = {
    "core": set(),
    "models": {"core"},
    "estimators": {"core"},
    "transforms": {"core"},
    "io": {"core"},
    "signals": {"core", "models"},
    "evaluation": {"core", "io"},
    "pipeline": {"core", "signals", "transforms", "estimators"},
    "labeling": {"core", "signals", "models"},
    "worlds": {"core", "io", "models", "labeling"},
    "trainers": {"core", "models", "signals", "pipeline", "worlds"},
    "runs": {"core", "models", "pipeline", "signals", "trainers", "worlds"},
    "cli": {
        "core",
        "io",
        "pipeline",
        "runs",
        "evaluation",
        "signals",
        "transforms",
        "estimators",
        "models",
        "worlds",
        "trainers",
    },
}


def room(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return parts[0] if parts[0] != "__init__" else "package"


def test_rooms_import_only_from_rooms_below() -> None:
    violations = []
    for path in sorted(SOURCE.rglob("*.py")):
        own = room(path)
        if own == "package":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("densereward.")
            ):
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("densereward.")]
            for name in names:
                target = name.split(".")[1]
                if target != own and target not in ALLOWED[own]:
                    violations.append(f"{path.relative_to(SOURCE)} imports {name}")
    assert violations == []
