"""Reward over-optimisation on the reasoning world (issue 17): gold and proxy reward against
``d = sqrt(KL(π‖π_init))`` under GRPO and best-of-n, Gao et al.'s forms fitted, for a learned
Bradley-Terry reward model alone and for an ensemble of four with and without its uncertainty
penalty (Ctrl-U's ``mean − κ·std``).

Not a test: it trains. ``python benchmarks/overoptimization.py [--seeds 0 1] [--updates 100]
[--plots DIR]``. Gold is the exact verifier (held-out accuracy, 4 samples per problem, T=1);
proxy is the reward model the policy is trained on (its batch mean). The reward models are
trained per seed on preference pairs of the reasoning world (canonical ≻ wrong answer, "miracle"
≻ wrong; ``benchmarks/reward_models.py``'s data) from the seed's SFT policy, and GRPO is rewarded
by the proxy alone (the outcome weighted 0 through ``combine``). RL's ``d`` is the square root of
the per-sequence KL to the SFT policy on the training batch; best-of-n's is the analytic
``sqrt(log n − (n − 1)/n)``. Rewards are counted from the SFT policy's (``R(0) = 0``).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from reward_models import data_for, three_levels

from densereward.evaluation.overoptimization import fit_gold_and_proxy, plot_overoptimization
from densereward.models.reward_model import (
    build_reward_model,
    load_reward_model,
    save_head_state,
    score_texts,
)
from densereward.pipeline import Recipe
from densereward.runs import RunRecipe, resolve_recipe
from densereward.trainers.reward_model import RewardModelConfig, train_reward_model
from densereward.worlds.reasoning.rollouts import rollout
from densereward.worlds.reasoning.world import ReasoningSetup, train_from_sft

PROXIES = {"bt": (1, 0.0), "bt x4": (4, 0.0), "bt x4, κ=1": (4, 1.0)}


def train_proxy(world: ReasoningSetup, base: Path, folder: Path, members: int, seed: int) -> None:
    # the reward_model signal reads prompt + response exactly as the batch holds them
    rows = [
        (r[0].removesuffix("=?"), *r[1:]) for r in three_levels(world.config.spec, 1500, 10 + seed)
    ]
    model = build_reward_model(base, world.tokenizer, members)
    config = RewardModelConfig(
        "bt", members, epochs=3, batch_size=32, learning_rate=1e-4, seed=seed
    )
    trained = train_reward_model(model, world.tokenizer, data_for("bt", rows), config)
    trained.model.save_pretrained(str(folder))
    world.tokenizer.save_pretrained(str(folder))
    save_head_state(folder, "bt", trained.loss_parameters, {"members": members})


def best_of_n(world: ReasoningSetup, folders: dict, seed: int, largest: int = 32) -> dict:
    """Gold and proxy of the proxy's pick among the first n SFT samples, per n and proxy."""
    problems = world.eval_set
    batch, _, _ = rollout(
        world.policy,
        world.tokenizer,
        problems,
        largest,
        world.config.max_new_tokens,
        generator=torch.Generator().manual_seed(20_000 + seed),
    )
    group = batch.episode("group").reshape(len(problems), largest)
    assert bool((group == torch.arange(len(problems))[:, None]).all())
    gold = batch.verdict.reshape(len(problems), largest).double()
    texts = [p + r for p, r in zip(batch.text["prompt"], batch.text["response"], strict=True)]
    ns = [n for n in (1, 2, 4, 8, 16, 32) if n <= largest]
    out = {}
    for name, (folder, penalty) in folders.items():
        model, tokenizer = load_reward_model(folder)
        members = score_texts(model, tokenizer, texts).double()
        proxy = (members.mean(1) - penalty * members.std(1, unbiased=False)).reshape(gold.shape)
        rows = []
        for n in ns:
            pick = proxy[:, :n].argmax(1, keepdim=True)
            rows.append(
                (
                    float(np.sqrt(np.log(n) - (n - 1) / n)),
                    float(gold.gather(1, pick).mean()),
                    float(proxy.gather(1, pick).mean()),
                )
            )
        out[name] = rows
    return out


def rl_curve(world: ReasoningSetup, config, folder: Path, penalty: float) -> list:
    recipe = Recipe.from_dict(
        {
            "signals": {
                "proxy": {
                    "kind": "reward_model",
                    "path": str(folder),
                    "uncertainty_penalty": penalty,
                }
            },
            "transforms": [{"kind": "combine", "weights": {"proxy": 1.0, "outcome": 0.0}}],
            "estimator": {"kind": "grpo", "reward": "reward"},
        }
    )
    result = train_from_sft(world, config, recipe)
    return [
        (
            float(np.sqrt(max(row["kl"], 0.0) * row["response_tokens"])),
            row["eval_accuracy"],
            row["reward/proxy"],
        )
        for row in result.metrics
        if "eval_accuracy" in row and "kl" in row
    ]


def gains(points: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d, gold, proxy = (np.array(column, dtype=np.float64) for column in zip(*points, strict=True))
    return d, gold - gold[0], proxy - proxy[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--updates", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plots", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    log = lambda text: print(text, flush=True)  # noqa: E731
    recipe = RunRecipe.from_yaml(resolve_recipe("reasoning"))
    config = dataclasses.replace(recipe.trainer, eval_every=5)
    if args.updates:
        config = dataclasses.replace(config, updates=args.updates)
    rl: dict[str, list] = {name: [] for name in PROXIES}
    bon: dict[str, list] = {name: [] for name in PROXIES}
    for seed in args.seeds:
        world = recipe.world.setup(seed)
        log(f"seed {seed}: SFT {world.sft_seconds:.0f} s")
        with tempfile.TemporaryDirectory() as scratch:
            base = Path(scratch) / "base"
            world.policy.save_pretrained(base)
            world.tokenizer.save_pretrained(base)
            folders = {}
            for members in sorted({m for m, _ in PROXIES.values()}):
                started = time.perf_counter()
                folder = Path(scratch) / f"bt{members}"
                train_proxy(world, base, folder, members, seed)
                log(f"  reward model, {members} member(s): {time.perf_counter() - started:.0f} s")
                folders[members] = folder
            chosen = {name: (folders[m], k) for name, (m, k) in PROXIES.items()}
            for name, points in best_of_n(world, chosen, seed).items():
                bon[name].append(points)
            for name, (folder, penalty) in chosen.items():
                started = time.perf_counter()
                rl[name].append(
                    rl_curve(world, dataclasses.replace(config, seed=seed), folder, penalty)
                )
                d, gold, proxy = gains(rl[name][-1])
                log(
                    f"  RL {name}: d {d[-1]:.2f}, gold gain {gold[-1]:+.3f} (max {gold.max():+.3f}"
                    f" at d {d[gold.argmax()]:.2f}), proxy gain {proxy[-1]:+.3f} "
                    f"in {time.perf_counter() - started:.0f} s"
                )
    report(log, rl, bon, args.seeds, args.plots)


def report(log, rl, bon, seeds, plots: Path | None) -> None:
    log(f"\nmean over seeds {seeds}; gains over the SFT policy; fits of Gao et al.'s forms")
    log(
        "| proxy | setting | d at end | gold gain at end | best gold gain (at d) | proxy gain "
        "at end | gold fit α, β | gold peak d* (fit) | proxy fit α, β |"
    )
    log("|---|---|---|---|---|---|---|---|---|")
    for setting, table, form in (("GRPO", rl, "rl"), ("best-of-n", bon, "best_of_n")):
        for name, runs in table.items():
            length = min(len(run) for run in runs)
            mean = np.mean([np.array(run[:length]) for run in runs], 0)
            d, gold, proxy = gains([tuple(row) for row in mean])
            fits = fit_gold_and_proxy(d, gold, proxy)
            if plots is not None:
                plots.mkdir(parents=True, exist_ok=True)
                slug = name.replace(" ", "").replace(",", "_").replace("=", "")
                plot_overoptimization(
                    d, gold, proxy, plots / f"{setting.lower()}_{slug}.png", f"{setting}, {name}"
                )
            g, p = fits["gold"][form], fits["proxy"][form]
            log(
                f"| {name} | {setting} | {d[-1]:.2f} | {gold[-1]:+.3f} | {gold.max():+.3f} "
                f"({d[gold.argmax()]:.2f}) | {proxy[-1]:+.3f} | {g.alpha:.3f}, {g.beta:.3f} | "
                f"{g.peak[0]:.2f} | {p.alpha:.3f}, {p.beta:.3f} |"
            )


if __name__ == "__main__":
    main()
