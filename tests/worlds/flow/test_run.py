"""The shipped recipe runs end to end through ``densereward run`` on a tiny budget."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from densereward.cli import app


def test_flow_recipe_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["run", "flow", "--local", "--steps", "3", "--seeds", "0", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in out.iterdir())
    for name in ("gold_reward.png", "proxy_reward.png", "kl.png", "report.md", "metrics.parquet"):
        assert name in files
    metrics = pq.read_table(out / "metrics.parquet").to_pylist()
    methods = {
        "flow_grpo",
        "dense_grpo",
        "dense_grpo_calibrated",
        "turning_point_grpo",
        "g2rpo",
        "b2_diffurl",
    }
    assert {r["method"] for r in metrics} == methods
    assert [r["samples"] for r in metrics if r["method"] == "dense_grpo"] == [64, 128, 192]
    evaluations = pq.read_table(out / "evaluation.parquet").to_pylist()
    assert {e["method"] for e in evaluations} == methods
    assert all(0.0 <= e["eval_gold"] <= 1.0 for e in evaluations)
    report = (out / "report.md").read_text()
    assert "| dense_grpo |" in report and "data:image/png;base64," in report
    # B²-DiffuRL branches late in its first stage; the calibration moves the noise levels
    b2 = [r for r in metrics if r["method"] == "b2_diffurl"]
    assert [r["branch_index"] for r in b2] == [7, 5, 2]  # 3 updates, 4 stages, 10 steps
    calibrated = [r for r in metrics if r["method"] == "dense_grpo_calibrated"]
    moved = [abs(r["noise_level"] - 0.7) + r["noise_level_spread"] for r in calibrated]
    assert moved[-1] > 1e-3
    plain = [r for r in metrics if r["method"] == "dense_grpo"]
    assert all(abs(r["noise_level"] - 0.7) < 1e-6 and r["noise_level_spread"] == 0 for r in plain)
