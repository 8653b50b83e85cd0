"""A new world is one new package plus its registration: the bandit world of ``bandit.py``, never
named by ``runs``, ``cli`` or ``trainers``, runs end to end through ``densereward run``'s code
path — in this process, and from the real command with the world installed as a plugin (the
``densereward.plugins`` entry point), locally and on Ray."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from densereward.runs import RunRecipe, execute
from tests.runs.bandit import ArmPreferences, BanditWorld

ROOT = Path(__file__).resolve().parents[2]
RECIPE = """
name: bandit
world: {kind: bandit, arms: 5}
trainer: {kind: reinforce, updates: 30, pulls: 16}
seeds: [0, 1]
methods:
  grpo: {estimator: {kind: grpo}}
  rloo: {estimator: {kind: rloo}}
"""


def test_a_world_defined_outside_densereward_runs_end_to_end(tmp_path: Path) -> None:
    recipe = RunRecipe.from_dict(yaml.safe_load(RECIPE), "bandit")
    folder = execute(recipe, tmp_path / "run", local=True, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == [
        "checkpoints",
        "config.yaml",
        "evaluation.parquet",
        "metrics.parquet",
        "pairs",
        "recipe.yaml",
        "report.md",
        "reward.png",
    ]
    metrics = pq.read_table(folder / "metrics.parquet").to_pylist()
    for method in ("grpo", "rloo"):
        for seed in (0, 1):
            run = [r for r in metrics if r["method"] == method and r["seed"] == seed]
            assert [r["pulls"] for r in run] == [16 * (u + 1) for u in range(30)]
    evaluations = pq.read_table(folder / "evaluation.parquet").to_pylist()
    assert {(e["method"], e["seed"]) for e in evaluations} == {
        (m, s) for m in ("grpo", "rloo") for s in (0, 1)
    }
    # REINFORCE on either estimator's advantages moves the policy off uniform (0.5) to the best
    # arms; each checkpoint reproduces its evaluation row
    world = BanditWorld()
    for row in evaluations:
        assert row["eval_expected_reward"] > 0.7
        policy = ArmPreferences(5)
        policy.load_state_dict(
            torch.load(folder / "checkpoints" / f"{row['method']}-seed{row['seed']}.pt")
        )
        assert world.evaluate(world.setup(row["seed"]), policy) == {
            "eval_expected_reward": row["eval_expected_reward"]
        }
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["world"] == {"kind": "bandit", "arms": 5, "noise": 0.1}
    assert config["trainer"] == {
        "kind": "reinforce",
        "updates": 30,
        "pulls": 16,
        "learning_rate": 0.5,
    }
    report = (folder / "report.md").read_text()
    assert report.startswith("# bandit") and "| grpo |" in report and "| rloo |" in report


def test_the_world_declares_what_its_methods_may_ask_for() -> None:
    """It offers its signals nothing and its trainer trains on every pull: a recipe asking for
    more fails when it loads, not inside a run."""
    from densereward.core.errors import ConfigError

    data = yaml.safe_load(RECIPE)
    data["methods"]["prm"] = {"signals": {"prm": {"kind": "prm", "model": "prm_mc"}}}
    with pytest.raises(ConfigError, match=r"methods\.prm\.signals: needs model 'prm_mc'"):
        RunRecipe.from_dict(data, "bandit")
    data["methods"] = {"prof": {"estimator": {"kind": "prof", "process": "reward"}}}
    with pytest.raises(ConfigError, match="selects trajectories"):
        RunRecipe.from_dict(data, "bandit")
    data = yaml.safe_load(RECIPE)
    data["trainer"] = {"kind": "ppo"}
    with pytest.raises(
        ConfigError, match=r"trainer\.kind: the bandit world trains with 'reinforce'"
    ):
        RunRecipe.from_dict(data, "bandit")
    recipe = RunRecipe.from_dict(yaml.safe_load(RECIPE), "bandit").with_length(3)
    assert recipe.trainer == dataclasses.replace(recipe.trainer, updates=3)
    assert recipe.budget == 48


def plugin_environment(tmp_path: Path) -> dict[str, str]:
    """An installed distribution whose ``densereward.plugins`` entry point names the bandit
    world's module, as a third-party world package would declare it in its pyproject."""
    dist = tmp_path / "site" / "bandit_world-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bandit-world\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[densereward.plugins]\nbandit = tests.runs.bandit\n")
    path = os.pathsep.join([str(tmp_path / "site"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


def densereward(*args: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).with_name("densereward")
    return subprocess.run(
        [str(executable), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )


def test_the_command_runs_a_plugin_world_locally_and_on_ray_with_the_same_numbers(
    tmp_path: Path,
) -> None:
    env = plugin_environment(tmp_path)
    listed = densereward("components", "--kind", "world", env=env)
    assert listed.returncode == 0 and "bandit" in listed.stdout, listed.stderr
    recipe = tmp_path / "bandit.yaml"
    recipe.write_text(RECIPE.replace("updates: 30", "updates: 5"))
    metrics = {}
    for mode in ("--local", "--no-local"):
        out = tmp_path / mode.strip("-")
        result = densereward("run", recipe, "--out", out, mode, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "5-armed bandit" in result.stdout
        metrics[mode] = pq.read_table(out / "metrics.parquet").to_pylist()
    assert len(metrics["--local"]) == 2 * 2 * 5
    assert metrics["--local"] == metrics["--no-local"]
