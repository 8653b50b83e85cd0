"""Environment steps to 90 % success on MiniGrid DoorKey: sparse PPO vs each dense source.

For each world it runs the methods of ``recipes/doorkey.yaml`` over ``--seeds`` seeds (PPO,
``--budget`` steps each), then prints per method: the median steps at which the smoothed success
rate first reaches 90 % (runs that never do count as ``> budget``), the ratio to sparse, the final
success rate and true return, and a one-sided permutation test of "fewer steps than sparse" (on
steps-to-90 %, with runs that never reach it placed at the budget, which favours no one).

    python benchmarks/control_efficiency.py [--worlds MiniGrid-DoorKey-6x6-v0:150000 ...]
        [--seeds 5] [--out runs/benchmark-control]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from densereward.runs import RunRecipe, execute, resolve_recipe
from densereward.runs.executor import MethodRun
from densereward.runs.folder import run_results
from densereward.worlds.control.world import summarize


def permutation_p_value(
    ours: np.ndarray, baseline: np.ndarray, rounds: int = 20_000, seed: int = 0
) -> float:
    """P(mean difference <= observed) under exchangeable labels: small means we need fewer steps."""
    observed = ours.mean() - baseline.mean()
    pooled = np.concatenate([ours, baseline])
    rng = np.random.default_rng(seed)
    n = ours.size
    if _small(pooled.size, n):
        diffs = []
        for chosen in itertools.combinations(range(pooled.size), n):
            mask = np.zeros(pooled.size, bool)
            mask[list(chosen)] = True
            diffs.append(pooled[mask].mean() - pooled[~mask].mean())
        return float(np.mean(np.array(diffs) <= observed + 1e-9))
    count = 0
    for _ in range(rounds):
        perm = rng.permutation(pooled)
        count += perm[:n].mean() - perm[n:].mean() <= observed + 1e-9
    return count / rounds


def _small(total: int, chosen: int) -> bool:
    from math import comb

    return comb(total, chosen) <= 50_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--worlds",
        nargs="+",
        default=["MiniGrid-DoorKey-6x6-v0:150000", "MiniGrid-DoorKey-8x8-v0:300000"],
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark-control"))
    parser.add_argument("--local", action="store_true")
    args = parser.parse_args()
    base = RunRecipe.from_yaml(resolve_recipe("doorkey"))
    for world in args.worlds:
        env_id, budget = world.rsplit(":", 1)
        recipe = dataclasses.replace(
            base,
            name=env_id,
            seeds=tuple(range(args.seeds)),
            world=dataclasses.replace(base.world, env_id=env_id),
            trainer=dataclasses.replace(base.trainer, total_steps=int(budget)),
        )
        folder = args.out / env_id
        if not (folder / "metrics.parquet").exists():
            execute(recipe, folder, local=args.local, progress=False)
        rows = pq.read_table(folder / "metrics.parquet").to_pylist()
        runs = {
            (m, s): MethodRun([r for r in rows if (r["method"], r["seed"]) == (m, s)], b"", 0.0, {})
            for m in recipe.methods
            for s in recipe.seeds
        }
        summary = summarize(run_results(recipe, runs, 0.0), recipe.world.success_threshold)
        steps_budget = max(r["env_steps"] for r in rows)
        sparse = np.minimum(summary["sparse"]["steps_to_threshold"], steps_budget)
        print(f"\n{env_id}: PPO, {args.seeds} seeds, {steps_budget:,} steps per run ({folder})")
        print(
            f"{'method':<22}{'median steps to 90%':>22}{'reached':>9}{'x sparse':>10}"
            f"{'p (fewer)':>11}{'final success':>15}{'final return':>14}"
        )
        for method, row in summary.items():
            steps = row["steps_to_threshold"]
            censored = np.minimum(steps, steps_budget)
            reached = int(np.isfinite(steps).sum())
            median = np.median(steps)
            median_text = f"{median:,.0f}" if np.isfinite(median) else f"> {steps_budget:,}"
            sparse_median = np.median(summary["sparse"]["steps_to_threshold"])
            ratio = (
                median / sparse_median
                if np.isfinite(median) and np.isfinite(sparse_median)
                else float("nan")
            )
            ratio_text = f"{ratio:.2f}" if np.isfinite(ratio) else "-"
            p_text = "-" if method == "sparse" else f"{permutation_p_value(censored, sparse):.3f}"
            print(
                f"{method:<22}{median_text:>22}{reached:>6}/{steps.size:<2}{ratio_text:>10}{p_text:>11}"
                f"{row['final_success'].mean():>11.2f} ± {row['final_success'].std():.2f}"
                f"{row['final_return'].mean():>9.3f}"
            )


if __name__ == "__main__":
    main()
