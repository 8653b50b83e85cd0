"""Reward models trained online with the policy (issue 17): GRPO on the reasoning world with a PRM
updated on the policy's own samples, against outcome-only GRPO, per seed and on the mean.

Not a test: it trains. ``python benchmarks/online_reward_models.py [--seeds 0 1 2 3]
[--updates 100] [--out FILE]`` runs the methods of the recipe ``reasoning_online_prm`` on each
seed (one SFT policy per seed, shared by its methods) and prints:

1. held-out accuracy (mean of 4 samples per problem, T=1) against training samples, mean over
   seeds;
2. samples each method needs to reach outcome-only's final accuracy, on the mean curve and per
   seed (each against its own seed's outcome-only run), with the ratio (target ≤ 0.5);
3. final accuracy per seed and mean ± std;
4. the guard: the fraction of updates kept, and of iterations whose model beat the base rate on
   held-out groups (its reward was used);
5. best-of-8 reranking (score = the minimum step score) of samples from the SFT policy and from
   the final policy of the ``online_prm_gated`` run (``--final-policy-of``): random pick, oracle,
   the offline exact-label PRM and each co-trained PRM as it ended.

``--out`` is rewritten after every seed, so a long run keeps what finished; ``--merge`` reports
several runs' files together.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from reasoning_efficiency import markdown_table, samples_to_reach

from densereward.core.segments import Groups, aggregate_segments
from densereward.evaluation.process import best_of_n_accuracy
from densereward.models.language import step_end_positions, trajectories_to_rows
from densereward.runs import RunRecipe, resolve_recipe
from densereward.worlds.reasoning.rollouts import rollout
from densereward.worlds.reasoning.world import ReasoningSetup, train_from_sft


def ratio(need: float, base: float) -> str:
    return f"{need / base:.2f}" if np.isfinite(need) and base > 0 else "never"


def best_of_n(world: ReasoningSetup, policy, prms: dict, seed: int, n: int = 8) -> dict:
    """Best-of-``n`` accuracy on the held-out problems, ``policy``'s samples, per reranker."""
    batch, _, _ = rollout(
        policy,
        world.tokenizer,
        world.eval_set,
        n,
        world.config.max_new_tokens,
        generator=torch.Generator().manual_seed(10_000 + seed),
    )
    correct, group = batch.episode("outcome"), batch.episode("group")
    out = {
        "random pick": float(correct.mean()),
        f"oracle (any of {n})": float(Groups.from_labels(group).max(correct).mean()),
    }
    rows, positions = trajectories_to_rows(batch), step_end_positions(batch)
    for name, prm in prms.items():
        scores = prm.score(rows, positions).double()
        solution = aggregate_segments(scores, batch.segments, "min")
        out[name] = best_of_n_accuracy(solution, correct, group)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--updates", type=int, default=None)
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--final-policy-of", default="online_prm_gated", help="whose final policy best-of-8 samples"
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="report the --out files of runs on "
        "other seeds together (each run's seeds once), without training",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    log = lambda text: print(text, flush=True)  # noqa: E731
    if args.merge:
        merged(log, args.merge)
        return
    recipe = RunRecipe.from_yaml(resolve_recipe("reasoning_online_prm"))
    methods = {m: recipe.methods[m] for m in (args.methods or recipe.methods)}
    config = recipe.trainer
    if args.updates:
        config = dataclasses.replace(config, updates=args.updates)
    curves: dict[str, dict[int, list[tuple[float, float]]]] = {m: {} for m in methods}
    guard: dict[str, dict[int, tuple[float, float]]] = {}
    final_label = f"{args.final_policy_of}'s final policy"
    bon: dict[str, dict[str, list[float]]] = {"SFT policy": {}, final_label: {}}
    for seed in args.seeds:
        world = recipe.world.setup(seed)
        log(f"seed {seed}: SFT {world.sft_seconds:.0f} s")
        co_trained = {}
        final_policy = None
        for name, method in methods.items():
            started = time.perf_counter()
            result = train_from_sft(world, dataclasses.replace(config, seed=seed), method)
            curves[name][seed] = [
                (row["samples"], row["eval_accuracy"])
                for row in result.metrics
                if "eval_accuracy" in row
            ]
            signal = result.pipeline.signals.get("prm")
            history = getattr(signal, "history", None)
            if history:
                co_trained[f"co-trained {name}"] = signal.prm
                guard.setdefault(name, {})[seed] = (
                    float(np.mean([r["kept"] for r in history])),
                    float(np.mean([r["informative"] for r in history])),
                )
            if name == args.final_policy_of:
                final_policy = result.policy
            log(
                f"  {name}: {curves[name][seed][0][1]:.3f} -> {curves[name][seed][-1][1]:.3f} "
                f"in {time.perf_counter() - started:.0f} s"
                + (f"; kept {guard[name][seed][0]:.2f}" if history else "")
            )
        prms = {"offline prm_exact": world.models(["prm_exact"])["prm_exact"], **co_trained}
        for label, policy in (
            ("SFT policy", world.policy),
            (final_label, final_policy),
        ):
            if policy is None:
                continue
            for key, value in best_of_n(world, policy, prms, seed).items():
                bon[label].setdefault(key, []).append(value)
        latest = {k: {m: round(v[-1], 3) for m, v in d.items()} for k, d in bon.items() if d}
        log(f"  best-of-8: {json.dumps(latest)}")
        if args.out:
            finished = {m: c for m, c in curves.items() if c}
            args.out.write_text(
                json.dumps({"curves": finished, "guard": guard, "best_of_8": bon}, default=float)
            )
    report(log, curves, guard, bon, args.seeds)


def merged(log, files: list[Path]) -> None:
    """One report over the seeds of several ``--out`` files (JSON keys are strings again)."""
    curves: dict = {}
    guard: dict = {}
    bon: dict = {}
    seeds: list[int] = []
    for file in files:
        data = json.loads(file.read_text())
        for method, by_seed in data["curves"].items():
            for seed, curve in by_seed.items():
                curves.setdefault(method, {})[int(seed)] = [tuple(point) for point in curve]
        for method, by_seed in data["guard"].items():
            for seed, value in by_seed.items():
                guard.setdefault(method, {})[int(seed)] = tuple(value)
        for label, rows in data["best_of_8"].items():
            for key, values in rows.items():
                bon.setdefault(label, {}).setdefault(key, []).extend(values)
        seeds.extend(int(seed) for seed in next(iter(data["curves"].values())))
    report(log, curves, guard, bon, seeds)


def report(log, curves, guard, bon, seeds) -> None:
    methods = list(curves)
    mean = {
        m: [
            (curves[m][seeds[0]][i][0], float(np.mean([curves[m][s][i][1] for s in seeds])))
            for i in range(len(curves[m][seeds[0]]))
        ]
        for m in methods
    }
    markdown_table(
        log,
        f"1. held-out accuracy vs training samples, mean over seeds {seeds}",
        ["samples", *methods],
        (
            [f"{samples:,.0f}", *(f"{mean[m][i][1]:.3f}" for m in methods)]
            for i, (samples, _) in enumerate(mean[methods[0]])
        ),
    )
    target = mean["outcome"][-1][1]
    base = samples_to_reach(mean["outcome"], target)
    per_seed_base = {
        s: samples_to_reach(curves["outcome"][s], curves["outcome"][s][-1][1]) for s in seeds
    }
    rows = []
    for m in methods:
        need = samples_to_reach(mean[m], target)
        per = [
            ratio(samples_to_reach(curves[m][s], curves["outcome"][s][-1][1]), per_seed_base[s])
            for s in seeds
        ]
        rows.append([m, f"{need:,.0f}", ratio(need, base), " / ".join(per)])
    markdown_table(
        log,
        f"2. samples to reach outcome-only's final accuracy ({target:.3f} on the mean curve; "
        "per seed, that seed's own)",
        ["method", "samples (mean curve)", "ratio", "ratio per seed"],
        rows,
    )
    markdown_table(
        log,
        "3. final accuracy",
        ["method", *(f"seed {s}" for s in seeds), "mean ± std"],
        (
            [
                m,
                *(f"{curves[m][s][-1][1]:.3f}" for s in seeds),
                f"{np.mean([curves[m][s][-1][1] for s in seeds]):.3f} ± "
                f"{np.std([curves[m][s][-1][1] for s in seeds]):.3f}",
            ]
            for m in methods
        ),
    )
    if guard:
        markdown_table(
            log,
            "4. the guard: fraction of updates kept / of iterations rewarded by the model",
            ["method", *(f"seed {s}" for s in seeds)],
            (
                [m, *(f"{g[s][0]:.2f} / {g[s][1]:.2f}" if s in g else "-" for s in seeds)]
                for m, g in guard.items()
            ),
        )
    for label, rows_by in bon.items():
        if rows_by:
            markdown_table(
                log,
                f"5. best-of-8 on held-out problems, samples of the {label} (min step score)",
                ["reranker", *(f"seed {s}" for s in seeds), "mean"],
                (
                    [k, *(f"{v:.3f}" for v in values), f"{np.mean(values):.3f}"]
                    for k, values in rows_by.items()
                ),
            )


if __name__ == "__main__":
    main()
