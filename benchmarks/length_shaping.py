"""Length and efficiency shaping on the reasoning world (issue 17): tokens per response and
accuracy for GRPO with LASER, LASER-D and a conciseness reward, against outcome-only GRPO.

Not a test: it trains. ``python benchmarks/length_shaping.py [--seeds 0 1] [--updates 100]``.
The claim under test is fewer tokens at equal accuracy. The world and trainer are the
``reasoning`` recipe's (its SFT policy repeats and garbles steps in 30% of its demonstrations, so
there is length to cut). LASER's budget is the median length of the SFT policy's correct
responses on the training distribution, measured per seed before RL; LASER-D sets its budgets
from each batch (difficulty by group accuracy), the conciseness reward needs none.

Prints, per method (mean over seeds, and per seed): held-out accuracy and tokens per response
(4 samples per problem, T=1) at the start and the end, and the relative change in tokens.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from densereward.pipeline import Recipe
from densereward.runs import RunRecipe, resolve_recipe
from densereward.worlds.reasoning.rollouts import rollout
from densereward.worlds.reasoning.world import ReasoningSetup, train_from_sft


def correct_median_tokens(world: ReasoningSetup, seed: int) -> float:
    """The median token length of the SFT policy's correct responses to fresh training prompts."""
    batch, rows, _ = rollout(
        world.policy,
        world.tokenizer,
        world.train_problems(128, 10_000),
        4,
        world.config.max_new_tokens,
        generator=torch.Generator().manual_seed(seed),
    )
    tokens = rows.response_mask.sum(1).double()
    return float(tokens[batch.verdict == 1].median())


def methods(budget: float) -> dict[str, Recipe]:
    outcome = {"estimator": {"kind": "grpo", "reward": None}}
    return {
        name: Recipe.from_dict(spec)
        for name, spec in {
            "outcome": outcome,
            "laser": {"transforms": [{"kind": "laser", "budget": budget, "alpha": 0.5}], **outcome},
            "laser_d": {"transforms": [{"kind": "laser_d", "alpha": 0.5}], **outcome},
            "conciseness": {"transforms": [{"kind": "conciseness", "alpha": 0.2}], **outcome},
        }.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--updates", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    log = lambda text: print(text, flush=True)  # noqa: E731
    recipe = RunRecipe.from_yaml(resolve_recipe("reasoning"))
    config = recipe.trainer
    if args.updates:
        config = dataclasses.replace(config, updates=args.updates)
    rows: dict[str, list[tuple[float, float, float, float]]] = {}
    for seed in args.seeds:
        world = recipe.world.setup(seed)
        budget = correct_median_tokens(world, seed)
        log(f"seed {seed}: SFT {world.sft_seconds:.0f} s; LASER budget {budget:.0f} tokens")
        for name, method in methods(budget).items():
            started = time.perf_counter()
            result = train_from_sft(world, dataclasses.replace(config, seed=seed), method)
            evaluations = [row for row in result.metrics if "eval_accuracy" in row]
            first, last = evaluations[0], evaluations[-1]
            rows.setdefault(name, []).append(
                (
                    first["eval_accuracy"],
                    last["eval_accuracy"],
                    first["eval_tokens"],
                    last["eval_tokens"],
                )
            )
            log(
                f"  {name}: accuracy {first['eval_accuracy']:.3f} -> {last['eval_accuracy']:.3f}, "
                f"tokens {first['eval_tokens']:.1f} -> {last['eval_tokens']:.1f} "
                f"in {time.perf_counter() - started:.0f} s"
            )
    log(
        f"\n| method | final accuracy (mean; per seed {args.seeds}) | tokens start → end (mean) "
        "| change in tokens | tokens per seed |"
    )
    log("|---|---|---|---|---|")
    for name, values in rows.items():
        table = np.array(values)
        log(
            f"| {name} | {table[:, 1].mean():.3f} ("
            + " / ".join(f"{v:.3f}" for v in table[:, 1])
            + f") | {table[:, 2].mean():.1f} → {table[:, 3].mean():.1f} | "
            f"{table[:, 3].mean() / table[:, 2].mean() - 1:+.1%} | "
            + " / ".join(f"{v:.1f}" for v in table[:, 3])
            + " |"
        )


if __name__ == "__main__":
    main()
