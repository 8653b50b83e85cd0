"""Reasoning world: held-out accuracy against training samples for outcome-only GRPO and GRPO
with dense process signals, each PRM's first-error F1, PRM throughput, and reward hacking.

Not a test: it trains. ``python benchmarks/reasoning_efficiency.py [--seeds 0 1] [--updates 40]``
prints these tables (and writes them as JSON with ``--out``):

1. accuracy (mean over 4 samples per held-out problem, temperature 1) at each evaluation, per
   method, averaged over seeds; 1b. held-out process accuracy (no wrong step) at the end;
2. samples each method needs to reach outcome-only GRPO's final accuracy, and the ratio to
   outcome-only's own (≤ 0.5 is the target);
3. first-error F1 (ProcessBench's metric) of each reward model on a held-out ProcessBench-format
   set whose labels are exact, and PRM scoring throughput against a plain forward pass; 3b.
   best-of-8 reranking of SFT samples by each PRM (``--reward-models-only``: tables 3 and 3b and
   the throughput, without RL, so without the implicit PRM);
4. reward hacking: GRPO rewarded by outcome + a lenient step judge's score summed over steps
   (raw), and the same judge through Clip, Delta and Clip-Delta; 4b. the same with the
   Monte-Carlo PRM's step scores in place of the judge (``--hacking-only``: tables 4 and 4b).

The exact step verifier as process reward, against outcome-only and the gated MC-PRM, is the
recipe ``densereward run reasoning_exact_labels --local [--seeds 0,1,2,3]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from densereward.core.segments import Groups, aggregate_segments
from densereward.evaluation.process import best_of_n_accuracy, first_error_f1
from densereward.models.language import build_causal_lm, step_end_positions, trajectories_to_rows
from densereward.models.prm import ProcessRewardModel
from densereward.pipeline import Recipe
from densereward.runs import RunRecipe, resolve_recipe
from densereward.trainers.grpo import GRPOConfig
from densereward.worlds.reasoning.evaluate import (
    implicit_first_errors,
    prm_first_errors,
    prm_throughput,
)
from densereward.worlds.reasoning.export import processbench_records
from densereward.worlds.reasoning.rollouts import rollout
from densereward.worlds.reasoning.tasks import sample_problems
from densereward.worlds.reasoning.tokenizer import build_tokenizer
from densereward.worlds.reasoning.world import ReasoningSetup, train_from_sft

HACKING = {
    "outcome only": {"estimator": {"kind": "grpo", "reward": None}},
    "raw judge": {"estimator": {"kind": "grpo", "reward": "step_true"}},
    "clip": {
        "transforms": [{"kind": "clip", "source": "step_true", "eta": 0.5}],
        "estimator": {"kind": "grpo", "reward": "step_true"},
    },
    "delta": {
        "transforms": [{"kind": "delta", "source": "step_true"}],
        "estimator": {"kind": "grpo", "reward": "step_true"},
    },
    "clip-delta": {
        "transforms": [{"kind": "clip_delta", "source": "step_true", "eta": 0.5}],
        "estimator": {"kind": "grpo", "reward": "step_true"},
    },
}


PRM = {"prm": {"kind": "prm", "model": "prm_mc"}}
PRM_HACKING = {
    "raw PRM": {"signals": PRM, "estimator": {"kind": "grpo", "reward": "prm"}},
    **{
        name: {
            "signals": PRM,
            "transforms": [{**spec["transforms"][0], "source": "prm"}],
            "estimator": {"kind": "grpo", "reward": "prm"},
        }
        for name, spec in HACKING.items()
        if "transforms" in spec
    },
}
"""The MC-PRM's step scores summed into the GRPO reward, raw and through each safeguard."""


def samples_to_reach(curve: list[tuple[float, float]], target: float) -> float:
    for samples, accuracy in curve:
        if accuracy >= target - 1e-9:
            return samples
    return float("inf")


def run_methods(world: ReasoningSetup, methods: dict[str, Recipe], config: GRPOConfig, log):
    curves, results = {}, {}
    for name, recipe in methods.items():
        started = time.perf_counter()
        result = train_from_sft(world, config, recipe)
        curves[name] = [
            (row["samples"], row["eval_accuracy"])
            for row in result.metrics
            if "eval_accuracy" in row
        ]
        results[name] = result
        log(
            f"  {name}: {curves[name][0][1]:.3f} -> {curves[name][-1][1]:.3f} "
            f"in {time.perf_counter() - started:.0f} s"
        )
    return curves, results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--updates", type=int, default=None)
    parser.add_argument("--hacking-updates", type=int, default=60)
    parser.add_argument("--skip-hacking", action="store_true")
    parser.add_argument(
        "--hacking-only", action="store_true", help="only the reward-hacking tables (4 and 4b)"
    )
    parser.add_argument(
        "--reward-models-only",
        action="store_true",
        help="only the reward models' first-error F1, best-of-N and throughput (tables 3 and 3b; "
        "no RL, so no implicit PRM: it is trained by its RL run)",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--throughput-only",
        action="store_true",
        help="only PRM scoring vs plain forward, on the recipe's backbone size (untrained: speed "
        "does not depend on the weights)",
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    log = lambda text: print(text, flush=True)  # noqa: E731
    recipe = RunRecipe.from_yaml(resolve_recipe("reasoning"))
    if args.throughput_only:
        world = recipe.world
        tokenizer = build_tokenizer()
        backbone = build_causal_lm(
            tokenizer, world.architecture, world.layers, world.width, world.heads
        )
        records = processbench_records(sample_problems(world.spec, 256, 555_000), seed=0)
        result = prm_throughput(ProcessRewardModel(backbone), tokenizer, records)
        print_tables({}, {}, result, {}, log)
        return
    config = recipe.trainer
    if args.updates:
        config = dataclasses.replace(config, updates=args.updates)
    report: dict = {"config": config.__dict__, "seeds": args.seeds}
    all_curves: dict[str, list[list[tuple[float, float]]]] = {}
    process_rows: dict[str, list[tuple[float, float]]] = {}
    f1_rows: dict[str, list[float]] = {}
    throughput = None
    bon_rows: dict[str, list[float]] = {}
    hacking: dict[str, list[dict[str, float]]] = {}
    prm_hacking: dict[str, list[dict[str, float]]] = {}
    for seed in args.seeds:
        world = recipe.world.setup(seed)
        log(f"seed {seed}: SFT {world.sft_seconds:.0f} s")
        world.models(["prm_mc"] if args.hacking_only else ["prm_exact", "prm_mc", "prover_value"])
        log(
            f"  reward models: { {k: round(v) for k, v in world.timings.items()} } s; "
            f"MC labels {world.cache['mc'].generated_tokens:,} generated tokens"
        )
        if not args.hacking_only:
            results = None
            if not args.reward_models_only:
                curves, results = run_methods(
                    world, dict(recipe.methods), dataclass_seed(config, seed), log
                )
                for name, curve in curves.items():
                    all_curves.setdefault(name, []).append(curve)
                    final = results[name].metrics[-1]
                    process_rows.setdefault(name, []).append(
                        (final["eval_process_accuracy"], final["eval_steps"])
                    )
            records = first_error_f1_rows(world, recipe, seed, f1_rows, results)
            best_of_n(world, seed, bon_rows, log)
            if throughput is None:
                throughput = prm_throughput(world.cache["prm_mc"], world.tokenizer, records[:256])
        if not (args.skip_hacking or args.reward_models_only):
            hack_config = dataclasses.replace(
                config, seed=seed, updates=args.hacking_updates, eval_every=10
            )
            for table, specs, column in (
                (hacking, HACKING, "step_true"),
                (prm_hacking, PRM_HACKING, "prm"),
            ):
                for name, spec in specs.items():
                    summary = hacking_run(world, hack_config, Recipe.from_dict(spec), column)
                    table.setdefault(name, []).append(summary)
                    log(f"  hacking {name}: {summary}")
    print_tables(all_curves, f1_rows, throughput, hacking, log, bon_rows, prm_hacking, process_rows)
    report.update(
        curves=all_curves,
        process=process_rows,
        f1=f1_rows,
        throughput=throughput,
        hacking=hacking,
        prm_hacking=prm_hacking,
        best_of_n=bon_rows,
    )
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, default=float))


def first_error_f1_rows(world: ReasoningSetup, recipe: RunRecipe, seed: int, rows, results):
    """First-error F1 of each trained PRM (and of the implicit PRM, given its RL run's
    ``results``) on 400 held-out ProcessBench-format items with exact labels; returns them."""
    held_out = sample_problems(recipe.world.spec, 400, 555_000 + seed)
    records = processbench_records(held_out, seed=seed)
    labels = [r["label"] for r in records]
    for name in ("prm_exact", "prm_mc", "prover_value"):
        predictions = prm_first_errors(world.cache[name], world.tokenizer, records)
        rows.setdefault(name, []).append(first_error_f1(labels, predictions).f1)
    phi = results["implicit_prm"].pipeline.signals["implicit_reward"].phi if results else None
    if phi is not None:
        predictions = implicit_first_errors(phi, world.policy, world.tokenizer, records, 0.05)
        rows.setdefault("implicit_prm (after RL)", []).append(
            first_error_f1(labels, predictions).f1
        )
    return records


def hacking_run(world: ReasoningSetup, config: GRPOConfig, recipe: Recipe, column: str) -> dict:
    """Train from the SFT policy; the reward column's per-response sum, response steps and
    held-out accuracy at the start and the end."""
    result = train_from_sft(world, config, recipe)
    rows = [r for r in result.metrics if f"reward/{column}" in r]
    evals = [r for r in result.metrics if "eval_accuracy" in r]
    return {
        "reward_first": float(np.mean([r[f"reward/{column}"] for r in rows[:5]])),
        "reward_last": float(np.mean([r[f"reward/{column}"] for r in rows[-5:]])),
        "steps_first": float(np.mean([r["response_steps"] for r in rows[:5]])),
        "steps_last": float(np.mean([r["response_steps"] for r in rows[-5:]])),
        "accuracy_first": evals[0]["eval_accuracy"],
        "accuracy_last": evals[-1]["eval_accuracy"],
    }


def best_of_n(
    world: ReasoningSetup, seed: int, rows: dict[str, list[float]], log, n: int = 8
) -> None:
    """Rerank ``n`` SFT samples per held-out problem by each PRM (step scores aggregated)."""
    problems = world.eval_set
    batch, _, _ = rollout(
        world.policy,
        world.tokenizer,
        problems,
        n,
        world.config.max_new_tokens,
        generator=torch.Generator().manual_seed(seed),
    )
    correct, group = batch.episode("outcome"), batch.episode("group")
    rows.setdefault("random pick (mean accuracy)", []).append(float(correct.mean()))
    oracle = Groups.from_labels(group).max(correct)
    rows.setdefault(f"oracle (any of {n} correct)", []).append(float(oracle.mean()))
    positions = step_end_positions(batch)
    for name in ("prm_exact", "prm_mc", "prover_value"):
        scores = world.cache[name].score(trajectories_to_rows(batch), positions).double()
        for how in ("min", "product", "last", "mean"):
            solution = aggregate_segments(scores, batch.segments, how)
            rows.setdefault(f"{name} / {how}", []).append(
                best_of_n_accuracy(solution, correct, group)
            )
    log(f"  best-of-{n}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in rows.items()))


def dataclass_seed(config: GRPOConfig, seed: int) -> GRPOConfig:
    return dataclasses.replace(config, seed=seed)


def markdown_table(log, title: str, header: list[str], rows) -> None:
    log(f"\n{title}")
    log("| " + " | ".join(header) + " |")
    log("|" + "---|" * len(header))
    for row in rows:
        log("| " + " | ".join(row) + " |")


def print_tables(
    curves, f1_rows, throughput, hacking, log, bon=None, prm_hacking=None, process=None
) -> None:
    if curves:
        print_curves(curves, log)
    if process:
        markdown_table(
            log,
            "1b. at the end: held-out process accuracy (sampled responses with no wrong step)",
            ["method", "process accuracy", "steps per response"],
            (
                [
                    name,
                    f"{np.mean([r[0] for r in rows]):.3f}",
                    f"{np.mean([r[1] for r in rows]):.2f}",
                ]
                for name, rows in process.items()
            ),
        )
    if f1_rows:
        markdown_table(
            log,
            "3. first-error F1 on 400 held-out ProcessBench-format items (exact labels)",
            ["reward model", "F1 (mean over seeds)"],
            ([name, f"{100 * np.mean(values):.1f}"] for name, values in f1_rows.items()),
        )
    if throughput:
        log(
            f"\nPRM scoring {throughput['prm_tokens_per_s']:,.0f} tokens/s vs plain forward "
            f"{throughput['forward_tokens_per_s']:,.0f} tokens/s: ratio {throughput['ratio']:.2f}"
        )
    if bon:
        markdown_table(
            log,
            "3b. best-of-8 reranking of SFT samples on the held-out problems",
            ["scorer / aggregation", "accuracy"],
            ([name, f"{np.mean(values):.3f}"] for name, values in bon.items()),
        )
    for title, table in (
        ("4. reward hacking: lenient step judge (true statement?) summed over steps", hacking),
        ("4b. reward hacking: the MC-PRM's step scores summed over steps", prm_hacking),
    ):
        if not table:
            continue
        means = {
            name: {key: np.mean([r[key] for r in runs]) for key in runs[0]}
            for name, runs in table.items()
        }
        markdown_table(
            log,
            title,
            ["reward", "reward sum first→last", "steps first→last", "held-out accuracy first→last"],
            (
                [
                    name,
                    f"{k['reward_first']:.2f} → {k['reward_last']:.2f}",
                    f"{k['steps_first']:.2f} → {k['steps_last']:.2f}",
                    f"{k['accuracy_first']:.3f} → {k['accuracy_last']:.3f}",
                ]
                for name, k in means.items()
            ),
        )


def print_curves(curves, log) -> None:
    methods = list(curves)
    mean_curves = {
        m: [(c[0][i][0], float(np.mean([run[i][1] for run in c]))) for i in range(len(c[0]))]
        for m, c in ((m, curves[m]) for m in methods)
    }
    markdown_table(
        log,
        "1. held-out accuracy (avg of 4 samples, T=1) vs training samples, mean over seeds",
        ["samples", *methods],
        (
            [f"{samples:,.0f}", *(f"{mean_curves[m][i][1]:.3f}" for m in methods)]
            for i, (samples, _) in enumerate(mean_curves[methods[0]])
        ),
    )
    target = mean_curves["outcome"][-1][1]
    base = samples_to_reach(mean_curves["outcome"], target)

    def ratio(need: float) -> float:
        return need / base if np.isfinite(need) and base > 0 else float("inf")

    markdown_table(
        log,
        f"2. samples to reach outcome-only's final accuracy ({target:.3f})",
        ["method", "samples", "ratio vs outcome"],
        (
            [m, f"{need:,.0f}", f"{ratio(need):.2f}"]
            for m, need in ((m, samples_to_reach(mean_curves[m], target)) for m in methods)
        ),
    )


if __name__ == "__main__":
    main()
