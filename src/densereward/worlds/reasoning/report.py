"""The reasoning world's section of a run report: accuracy per method, and the samples each
needs to reach the first method's final accuracy."""

from __future__ import annotations

import numpy as np

from densereward.core.components import RunResults
from densereward.evaluation.curves import first_reaching


def mean_curve(results: RunResults, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Held-out accuracy of ``method`` at each evaluation, averaged over seeds."""
    runs = [results.run(method, seed, "eval_accuracy") for seed in results.seeds]
    samples = np.array([row["samples"] for row in runs[0]], dtype=float)
    accuracy = np.array([[row["eval_accuracy"] for row in run] for run in runs]).mean(0)
    return samples, accuracy


def reasoning_report(label: str, results: RunResults) -> str:
    """``label``: the world's (``ReasoningWorld.label()``)."""
    baseline = results.methods[0]
    samples, accuracy = mean_curve(results, baseline)
    target = float(accuracy[-1])
    base = first_reaching(samples, accuracy, target - 1e-9)
    lines = [
        f"World `{label}`, GRPO for {results.budget:,} training samples per run, "
        f"seeds {', '.join(map(str, results.seeds))}. Wall time {results.wall:.0f} s. Accuracy is "
        "the exact verifier's on held-out problems, averaged over 4 samples per problem at "
        "temperature 1 (mean over seeds). *Samples to target*: first evaluation at which the "
        f"method reaches {baseline}'s final accuracy ({target:.3f}).",
        "",
        f"| method | start accuracy | final accuracy | samples to target | vs {baseline} | minutes per run |",
        "|---|---|---|---|---|---|",
    ]
    for method in results.methods:
        samples, accuracy = mean_curve(results, method)
        finals = [
            results.run(method, s, "eval_accuracy")[-1]["eval_accuracy"] for s in results.seeds
        ]
        need = first_reaching(samples, accuracy, target - 1e-9)
        ratio = f"{need / base:.2f}x" if np.isfinite(need) and base > 0 else "-"
        minutes = np.mean([results.seconds[(method, s)] for s in results.seeds]) / 60
        reach = f"{need:,.0f}" if np.isfinite(need) else f"> {results.budget:,}"
        lines.append(
            f"| {method} | {accuracy[0]:.3f} | {np.mean(finals):.3f} ± {np.std(finals):.3f} | "
            f"{reach} | {ratio} | {minutes:.1f} |"
        )
    lines += [
        "",
        "![held-out accuracy](accuracy.png)",
        "",
        "![response length](length.png)",
        "",
        "Files: `config.yaml` (resolved recipe), `metrics.parquet` (one row per update per run: "
        "accuracy, every reward component, response length, KL), `evaluation.parquet` (the "
        "trained policies' held-out evaluation), `checkpoints/` (policy weights).",
        "",
    ]
    return "\n".join(lines)
