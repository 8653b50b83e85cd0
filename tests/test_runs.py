"""``densereward run``: the run folder, and bad run recipes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from densereward.runs import RunRecipe

TINY = """
name: tiny
world: {kind: control, env_id: MiniGrid-Empty-5x5-v0}
trainer: {kind: ppo, total_steps: 512, num_envs: 2, num_steps: 64, update_epochs: 1}
seeds: [0, 1]
methods:
  sparse: {}
  novelty:
    signals: {bonus: {kind: count_bonus, scale: 0.01}}
    transforms: [{kind: combine, weights: {reward: 1.0, bonus: 1.0}}]
"""


def densereward(*args: str | Path) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).with_name("densereward")
    return subprocess.run(
        [str(executable), *map(str, args)], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("mode", ["--local", "--no-local"])
def test_run_writes_a_complete_folder(tmp_path: Path, mode: str) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY)
    out = tmp_path / "run"
    result = densereward("run", recipe, "--out", out, mode)
    assert result.returncode == 0, result.stderr[-2000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "checkpoints",
        "config.yaml",
        "evaluation.parquet",
        "metrics.parquet",
        "pairs",
        "recipe.yaml",
        "report.md",
        "success_rate.png",
        "true_return.png",
    ]
    metrics = pq.read_table(out / "metrics.parquet").to_pylist()
    # 2 methods x 2 seeds x 4 updates, each run's steps in order.
    assert len(metrics) == 16
    for method in ("sparse", "novelty"):
        for seed in (0, 1):
            steps = [r["env_steps"] for r in metrics if r["method"] == method and r["seed"] == seed]
            assert steps == [128, 256, 384, 512]
    config = yaml.safe_load((out / "config.yaml").read_text())
    expected = RunRecipe.from_yaml(recipe).resolved()
    assert {k: config[k] for k in expected} == expected
    report = (out / "report.md").read_text()
    assert "| sparse |" in report and "| novelty |" in report
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "novelty-seed0.pt",
        "novelty-seed1.pt",
        "sparse-seed0.pt",
        "sparse-seed1.pt",
    ]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


BAD_RUNS = {
    "unknown_signal": (
        TINY.replace("count_bonus", "count_bonsu"),
        r"methods\.novelty: signals\.bonus\.kind: unknown signal 'count_bonsu'",
    ),
    "unknown_trainer_parameter": (
        TINY.replace("update_epochs", "epochs"),
        r"trainer\.epochs: unknown PPO parameter",
    ),
    "wrong_type": (
        TINY.replace("total_steps: 512", "total_steps: many"),
        r"trainer\.total_steps: expected an integer",
    ),
    "method_not_a_mapping": (
        TINY.replace("sparse: {}", "sparse: [gae]"),
        r"methods\.sparse: must be a mapping",
    ),
    "non_positive_envs": (
        TINY.replace("num_envs: 2", "num_envs: 0"),
        r"trainer\.num_envs: must be positive, got 0",
    ),
    "missing_world": (
        TINY.replace("world: {kind: control, env_id: MiniGrid-Empty-5x5-v0}", ""),
        r"world: expected a mapping with a 'kind'",
    ),
    "world_without_kind": (
        TINY.replace("{kind: control, env_id", "{env_id"),
        r"world: missing 'kind'",
    ),
    "unknown_world": (
        TINY.replace("kind: control", "kind: contorl"),
        r"world\.kind: unknown world 'contorl' \(known: .*control",
    ),
    "signal_the_world_cannot_serve": (
        TINY.replace("{bonus: {kind: count_bonus, scale: 0.01}}", "{prm: {kind: prm}}"),
        r"methods\.novelty\.signals: needs model 'prm', which this world does not offer",
    ),
    "demonstrations_the_world_cannot_make": (
        TINY.replace("{bonus: {kind: count_bonus, scale: 0.01}}", "{p: {kind: progress_model}}"),
        r"methods\.novelty\.signals: needs demonstrations",
    ),
    "duplicate_seeds": (
        TINY.replace("seeds: [0, 1]", "seeds: [0, 0]"),
        r"seeds: a seed is named twice",
    ),
    "negative_seed": (
        TINY.replace("seeds: [0, 1]", "seeds: [-1]"),
        r"seeds: seeds are non-negative",
    ),
    "method_name_not_a_string": (
        TINY.replace("  sparse: {}", "  7: {}"),
        r"methods\.7: a method name is a string, got int",
    ),
    "method_name_with_a_path": (
        TINY.replace("  sparse: {}", "  ../escape: {}"),
        r"methods\.\.\./escape: a method name is letters",
    ),
    "filtering_estimator_in_a_control_world": (
        TINY.replace("sparse: {}", "sparse: {estimator: {kind: prof, process: reward}}"),
        r"methods\.sparse\.estimator: selects trajectories, which the control world's trainer",
    ),
    "unknown_environment": (
        TINY.replace("MiniGrid-Empty-5x5-v0", "MiniGrid-Nope-v0"),
        r"world\.env_id",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_RUNS))
def test_bad_run_recipe_fails_cleanly(tmp_path: Path, case: str) -> None:
    from tests.cli.test_cli import assert_user_error

    text, pattern = BAD_RUNS[case]
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    assert_user_error(densereward("run", recipe, "--out", tmp_path / "run", "--local"), pattern)
    assert not (tmp_path / "run").exists()


def test_every_shipped_recipe_loads() -> None:
    from densereward.pipeline import Recipe
    from densereward.runs import RECIPES

    for path in sorted(RECIPES.glob("*.yaml")):
        text = path.read_text()
        recipe = RunRecipe.from_yaml(path) if "methods:" in text else Recipe.from_yaml(path)
        assert recipe.name


UNREACHABLE = TINY.replace(
    "signals: {bonus: {kind: count_bonus, scale: 0.01}}",
    "signals: {bonus: {kind: ai_feedback, annotator: openai, base_url: 'http://127.0.0.1:9/v1'}}",
).replace("seeds: [0, 1]", "seeds: [0]")


def test_user_error_inside_a_ray_worker_is_one_line(tmp_path: Path) -> None:
    from tests.cli.test_cli import assert_user_error

    recipe = tmp_path / "unreachable.yaml"
    recipe.write_text(UNREACHABLE.replace("  sparse: {}\n", ""))
    out = tmp_path / "run"
    assert_user_error(
        densereward("run", recipe, "--out", out),
        r"annotator http://127\.0\.0\.1:9/v1/chat/completions: connection failed",
    )
    assert not out.exists()  # nothing had finished: nothing is left


def test_a_failed_run_keeps_what_finished_for_resume(tmp_path: Path) -> None:
    from tests.cli.test_cli import assert_user_error

    recipe = tmp_path / "unreachable.yaml"
    recipe.write_text(UNREACHABLE)
    out = tmp_path / "run"
    assert_user_error(
        densereward("run", recipe, "--out", out, "--local"),
        r"annotator http://127\.0\.0\.1:9/v1.*; 1 of 2 runs finished and are kept in .*--resume",
    )
    assert sorted(p.name for p in (out / "pairs").iterdir()) == [
        "sparse-seed0.json",
        "sparse-seed0.parquet",
    ]
    assert not (out / "report.md").exists()


TINY_REASONING = """
name: tiny-reasoning
world: {kind: reasoning, families: [arithmetic], min_ops: 1, max_ops: 2, layers: 1, width: 32,
        heads: 2, sft_examples: 128, sft_epochs: 1, eval_problems: 6, label_problems: 4,
        label_rollouts: 2, prm_epochs: 1, max_new_tokens: 16}
trainer: {kind: grpo, updates: 2, prompts_per_update: 2, group_size: 3, max_new_tokens: 16,
          eval_every: 1}
seeds: [0]
methods:
  outcome: {estimator: {kind: grpo, reward: null}}
  mc_prm:
    signals: {prm: {kind: prm, model: prm_mc}}
    estimator: {kind: step_grpo, process: prm}
  prof:
    signals: {prm: {kind: prm, model: prm_mc}}
    estimator: {kind: prof, process: prm, keep: 2}
  online_prm:
    signals: {prm: {kind: online_prm, holdout: 0.0}}
    estimator: {kind: step_grpo, process: prm}
"""


@pytest.mark.parametrize("mode", ["--local", "--no-local"])
def test_reasoning_run_writes_a_complete_folder(tmp_path: Path, mode: str) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY_REASONING)
    out = tmp_path / "run"
    result = densereward("run", recipe, "--out", out, mode)
    assert result.returncode == 0, result.stderr[-2000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "accuracy.png",
        "checkpoints",
        "config.yaml",
        "evaluation.parquet",
        "length.png",
        "metrics.parquet",
        "pairs",
        "recipe.yaml",
        "report.md",
    ]
    metrics = pq.read_table(out / "metrics.parquet").to_pylist()
    for method in ("outcome", "mc_prm", "prof", "online_prm"):
        run = [r for r in metrics if r["method"] == method]
        # one row per update plus the final evaluation; 2 prompts x 3 responses per update
        assert [r["samples"] for r in run] == [0, 6, 12]
        assert all(r["eval_accuracy"] is not None and 0 <= r["eval_accuracy"] <= 1 for r in run)
    assert all(
        r["reward/prm"] is not None for r in metrics if r["method"] == "mc_prm" and r["update"] < 2
    )
    # the online PRM's first batch is scored by its fresh head (0.5 everywhere); each update is
    # kept (no held-out groups, no guard) and logged from the pipeline's per-trajectory columns
    online = [r for r in metrics if r["method"] == "online_prm" and r["update"] < 2]
    assert [r["episode/prm_kept"] for r in online] == [1.0, 1.0]
    assert online[0]["reward/prm"] == pytest.approx(0.5 * online[0]["response_steps"])
    # PROF trains on 2 of each group's 3 responses
    assert [r["kept_fraction"] for r in metrics if r["method"] == "prof"][:2] == [2 / 3, 2 / 3]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["world"]["kind"] == "reasoning" and config["trainer"]["kind"] == "grpo"
    # the held-out evaluation of each trained policy is its final metrics row's
    evaluations = pq.read_table(out / "evaluation.parquet").to_pylist()
    for row in evaluations:
        final = [r for r in metrics if r["method"] == row["method"]][-1]
        assert row["eval_accuracy"] == final["eval_accuracy"]
        assert row["eval_greedy_accuracy"] == final["eval_greedy_accuracy"]
    report = (out / "report.md").read_text()
    assert "| outcome |" in report and "| mc_prm |" in report


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            "families: [arithmetic]",
            "families: [algebra]",
        ),
        ("kind: grpo, updates: 2", "kind: ppo, updates: 2"),
        ("updates: 2", "updatez: 2"),
        ("model: prm_mc", "model: prm_typo"),
        ("label_problems: 4", "label_problems: 4, sft_noise: 1.5"),
        ("label_problems: 4", "label_problems: 4, sft_corruptions: [typo]"),
        ("group_size: 3, max_new_tokens: 16", "group_size: 3, max_new_tokens: 20"),
    ],
)
def test_bad_reasoning_recipe_is_one_line(tmp_path: Path, change, message) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(TINY_REASONING.replace(change, message))
    result = densereward("run", recipe, "--out", tmp_path / "never")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ("update_epochs: 1}", "update_epochs: 1, learning_rate: -1}"),
        ("update_epochs: 1}", "update_epochs: 1, learning_rate: .nan}"),
        ("update_epochs: 1}", "update_epochs: 1, clip_range: 0}"),
        ("update_epochs: 1}", "update_epochs: 1, ent_coef: -0.1}"),
    ],
)
def test_a_rate_that_would_fail_only_in_training_is_refused_at_load(tmp_path, change, pattern):
    """``densereward recipe`` validates a recipe: it names the field of a negative, zero or NaN
    rate (which used to pass and fail, or diverge, once training ran)."""
    from tests.cli.test_cli import assert_user_error

    recipe = tmp_path / "bad.yaml"
    recipe.write_text(TINY.replace(change, pattern))
    field = pattern.split(", ")[1].split(":")[0]
    assert_user_error(densereward("recipe", recipe), rf"trainer\.{field}: must be a finite")
