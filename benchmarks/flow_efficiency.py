"""Flow world benchmark (not a test): sample efficiency of dense rewards, reward hacking, FK steering.

1. **Samples to the sparse baseline's final gold reward.** Flow-GRPO with the terminal reward
   repeated over steps (``flow_grpo``) against DenseGRPO (``dense_grpo``: ODE-completion reward
   gains, per-timestep group z-score) and TurningPoint-GRPO (``turning_point_grpo``), each seed
   from the same pretrained flow. Target = the sparse baseline's final gold reward (mean over its
   last 10 % of updates, averaged over seeds); per seed, the first sample count where a method's
   gold reward (trailing mean over 5 updates) reaches it. Ratio of medians to the baseline's, and
   a one-sided paired sign-flip permutation test on ``log(samples)`` (a seed that never reaches
   counts as the budget, which favours no method).
2. **Proxy vs gold.** Flow-GRPO trained on the linear-probe proxy, with Flow-GRPO's KL term to
   the pretrained flow (``kl_coef``) as the safeguard or without it: held-out proxy and gold.
3. **FK steering vs particles.** The pretrained flow steered at inference by the gold reward of
   intermediate ODE completions (difference potential, resampling every step), against plain
   SDE samples and best-of-N with the same number of samples.

    .venv/bin/python benchmarks/flow_efficiency.py            # defaults below, a few minutes
    .venv/bin/python benchmarks/flow_efficiency.py --seeds 5 --updates 40 --hack-updates 80
    .venv/bin/python benchmarks/flow_efficiency.py --dataset digits   # 8×8 digits, classifier gold
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time

import numpy as np
import torch

from densereward.evaluation.curves import first_reaching, trailing_mean
from densereward.pipeline import Recipe
from densereward.worlds.flow.model import complete_ode, sample_sde
from densereward.worlds.flow.steering import fk_steer
from densereward.worlds.flow.tree import tree_sample
from densereward.worlds.flow.world import FlowGRPOConfig, FlowWorld

METHODS = {
    "flow_grpo": {"estimator": {"kind": "grpo"}},
    "dense_grpo": {
        "signals": {"gain": {"kind": "ode_reward_gain"}},
        "estimator": {"kind": "timestep_grpo", "process": "gain"},
    },
    "dense_grpo_calibrated": {
        "signals": {
            "gain": {"kind": "ode_reward_gain"},
            "noise": {"kind": "noise_calibration", "source": "gain"},
        },
        "estimator": {"kind": "timestep_grpo", "process": "gain"},
    },
    "turning_point_grpo": {
        "signals": {"gain": {"kind": "ode_reward_gain"}},
        "transforms": [{"kind": "turning_point", "source": "gain"}],
        "estimator": {"kind": "timestep_grpo", "process": "gain"},
    },
    "g2rpo": {
        "signals": {f"gain{g}": {"kind": "ode_reward_gain", "granularity": g} for g in (1, 2, 3)},
        "estimator": {"kind": "multi_granularity_grpo", "processes": ["gain1", "gain2", "gain3"]},
    },
    "b2_diffurl": {
        "signals": {"trained": {"kind": "branch_sampling", "stages": 4}},
        "estimator": {"kind": "grpo"},
    },
}


def recipe(name: str, spec: dict) -> Recipe:
    return Recipe.from_dict({**spec, "name": name}, name)


def final(values: list[float]) -> float:
    tail = max(1, len(values) // 10)
    return float(np.mean(values[-tail:]))


def sign_flip_p_value(differences: np.ndarray, rounds: int = 20000) -> float:
    """One-sided paired permutation test: P(mean of sign-flipped differences <= observed)."""
    rng = np.random.default_rng(0)
    observed = differences.mean()
    if len(differences) <= 16:  # exact: every sign pattern
        patterns = np.array(list(itertools.product([-1, 1], repeat=len(differences))))
    else:
        patterns = rng.choice([-1, 1], size=(rounds, len(differences)))
    flipped = (patterns * differences).mean(1)
    return float(np.mean(flipped <= observed + 1e-12))


def make_world(args: argparse.Namespace, **fields: object) -> FlowWorld:
    hidden = args.hidden if args.hidden is not None else (256 if args.dataset == "digits" else 128)
    return FlowWorld(
        dataset=args.dataset,
        hidden=hidden,
        pretrain_steps=args.pretrain_steps,
        **fields,  # type: ignore[arg-type]
    )


def efficiency(args: argparse.Namespace) -> None:
    world = make_world(args)
    trainer = FlowGRPOConfig(updates=args.updates, learning_rate=args.learning_rate)
    methods = {m: METHODS[m] for m in METHODS if m == "flow_grpo" or m in args.methods}
    curves: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {m: [] for m in methods}
    evaluations: dict[str, list[float]] = {m: [] for m in methods}
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    levels: list[float] = []
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    for seed in seeds:
        setup = world.setup(seed)
        for name, spec in methods.items():
            torch.manual_seed(seed)
            start = time.perf_counter()
            config = dataclasses.replace(trainer, seed=seed)
            if name != "flow_grpo" and args.dense_learning_rate is not None:
                config = dataclasses.replace(config, learning_rate=args.dense_learning_rate)
            trained = world.train(setup, config, recipe(name, spec), lambda n: None)
            seconds[name].append(time.perf_counter() - start)
            samples = np.array([r["samples"] for r in trained.metrics])
            gold = np.array([r["gold_reward"] for r in trained.metrics])
            curves[name].append((samples, gold))
            evaluations[name].append(trained.evaluation["eval_gold"])
            if name == "dense_grpo_calibrated":
                last = trained.metrics[-1]
                levels.append(last["noise_level"])
    budget = world.budget(trainer)
    target = float(np.mean([final(list(g)) for _, g in curves["flow_grpo"]]))
    reached = {
        name: np.array(
            [first_reaching(s, trailing_mean(g, 5), target) for s, g in curves[name]], dtype=float
        )
        for name in methods
    }
    base = reached["flow_grpo"]
    print(
        f"\n## 1. Samples to flow_grpo's final gold reward ({target:.3f}); seeds "
        f"{seeds.start}-{seeds.stop - 1}, {args.updates} updates x 64 samples = {budget:,} "
        f"samples per run, learning rate {args.learning_rate:g}"
        + (
            f" (dense methods {args.dense_learning_rate:g})"
            if args.dense_learning_rate is not None
            else ""
        )
        + "\n"
    )
    print(
        "| method | final gold | held-out gold | samples to target (median) | reached | "
        "ratio vs flow_grpo | p (fewer samples) | s per run |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in methods:
        finals = np.array([final(list(g)) for _, g in curves[name]])
        mine = reached[name]
        censored = np.where(np.isfinite(mine), mine, budget)
        base_censored = np.where(np.isfinite(base), base, budget)
        ratio = np.median(censored) / np.median(base_censored)
        p = (
            sign_flip_p_value(np.log(censored) - np.log(base_censored))
            if name != "flow_grpo"
            else float("nan")
        )
        print(
            f"| {name} | {finals.mean():.3f} ± {finals.std():.3f} | "
            f"{np.mean(evaluations[name]):.3f} | {np.median(censored):,.0f} | "
            f"{int(np.isfinite(mine).sum())}/{mine.size} | {ratio:.2f}x | "
            f"{'-' if np.isnan(p) else f'{p:.4f}'} | {np.mean(seconds[name]):.1f} |"
        )
    print("\nPer seed samples to target:")
    for name in methods:
        print(f"  {name}: {[int(v) if np.isfinite(v) else None for v in reached[name]]}")
    if levels:
        print(
            f"\ndense_grpo_calibrated: mean noise level after training {np.mean(levels):.3f} "
            f"(start 0.7; min/max over seeds {min(levels):.3f}/{max(levels):.3f})"
        )


def hacking(args: argparse.Namespace) -> None:
    world = make_world(args, reward="proxy")
    print(
        f"\n## 2. Trained on the proxy: held-out proxy vs gold; {args.seeds} seeds, "
        f"{args.hack_updates} updates\n"
    )
    print(
        "| safeguard | held-out proxy | held-out gold | gap (proxy - gold) | peak training gold "
        "| final KL |"
    )
    print("|---|---|---|---|---|---|")
    setups = [world.setup(seed) for seed in range(args.seeds)]
    base_gold = np.mean([world.evaluate(s, s.model)["eval_gold"] for s in setups])
    base_proxy = np.mean([world.evaluate(s, s.model)["eval_proxy"] for s in setups])
    print(
        f"| pretrained flow | {base_proxy:.3f} | {base_gold:.3f} | {base_proxy - base_gold:.3f} | - | 0 |"
    )
    for kl_coef in args.kl_coefs:
        proxies, golds, peaks, kls = [], [], [], []
        for seed, setup in enumerate(setups):
            trainer = FlowGRPOConfig(updates=args.hack_updates, kl_coef=kl_coef, seed=seed)
            trained = world.train(
                setup, trainer, recipe("flow_grpo", METHODS["flow_grpo"]), lambda n: None
            )
            proxies.append(trained.evaluation["eval_proxy"])
            golds.append(trained.evaluation["eval_gold"])
            peaks.append(max(r["gold_reward"] for r in trained.metrics))
            kls.append(final([r["kl"] for r in trained.metrics]))
        name = "none (kl_coef 0)" if kl_coef == 0 else f"KL to pretrained, kl_coef {kl_coef:g}"
        print(
            f"| {name} | {np.mean(proxies):.3f} ± {np.std(proxies):.3f} | "
            f"{np.mean(golds):.3f} ± {np.std(golds):.3f} | {np.mean(proxies) - np.mean(golds):.3f} "
            f"| {np.mean(peaks):.3f} | {np.mean(kls):.1f} |"
        )


def steering(args: argparse.Namespace) -> None:
    world = make_world(args)
    print(
        f"\n## 3. FK steering of the pretrained flow by gold reward of ODE completions "
        f"(strength {args.strength:g}, resampling every step); {args.seeds} seeds x "
        f"{args.systems} systems per prompt\n"
    )
    print(
        "| particles | plain SDE gold | best-of-N gold | FK gold (weighted particle) | "
        "FK on target | network evaluations: FK / best-of-N |"
    )
    print("|---|---|---|---|---|---|")
    setups = [world.setup(seed) for seed in range(args.seeds)]
    for particles in args.particles:
        plain, best, steered, on_target = [], [], [], []
        for seed, setup in enumerate(setups):
            model, rewards = setup.model, setup.rewards
            prompts = torch.arange(world.prompts).repeat(args.systems)

            def intermediate(
                x: torch.Tensor, k: int, p: torch.Tensor, model=model, rewards=rewards
            ) -> torch.Tensor:
                index = torch.full((x.shape[0],), k)
                return rewards.gold(complete_ode(model, x, index, p, world.steps), p)

            generator = torch.Generator().manual_seed(seed)
            out = fk_steer(
                model,
                prompts,
                particles,
                world.steps,
                0.7,
                intermediate,
                generator,
                strength=args.strength,
                resample="every",
            )
            flat = prompts.repeat_interleave(particles)
            gold = rewards.gold(out.samples.reshape(flat.shape[0], -1), flat).view(-1, particles)
            weights = out.log_weights.exp()
            steered.append(float((weights * gold).sum(1).mean()))
            on_target.append(float((weights * (gold > 0.5)).sum(1).mean()))
            independent = sample_sde(
                model, flat, world.steps, 0.7, torch.Generator().manual_seed(10_000 + seed)
            )
            plain_gold = rewards.gold(independent.final, flat).view(-1, particles)
            plain.append(float(plain_gold.mean()))
            best.append(float(plain_gold.max(1).values.mean()))
        # per system: each particle's SDE step plus the ODE completion of what remains
        evaluations = particles * (world.steps + world.steps * (world.steps - 1) // 2)
        print(
            f"| {particles} | {np.mean(plain):.3f} | {np.mean(best):.3f} | "
            f"{np.mean(steered):.3f} ± {np.std(steered):.3f} | {np.mean(on_target):.2f} | "
            f"{evaluations} / {particles * world.steps} |"
        )


def tree_search(args: argparse.Namespace) -> None:
    world = make_world(args)
    print(
        f"\n## 4. Diffusion tree sampling of the pretrained flow by terminal gold reward "
        f"(λ {args.strength:g}, width {args.width}); {args.seeds} seeds x {args.systems} trees "
        "per prompt. Network evaluations per final sample; best-of-N at about the same count\n"
    )
    print(
        "| rollouts | network evaluations: DTS / best-of-N | DTS gold (sampled) | DTS on target "
        "| DTS* gold (best leaf) | best-of-N gold | plain SDE gold | s per seed |"
    )
    print("|---|---|---|---|---|---|---|---|")
    setups = [world.setup(seed) for seed in range(args.seeds)]
    for rollouts in args.rollouts:
        sampled, on_target, best, best_of, plain, costs, wall = [], [], [], [], [], [], []
        for seed, setup in enumerate(setups):
            prompts = torch.arange(world.prompts).repeat(args.systems)
            generator = torch.Generator().manual_seed(seed)
            start = time.perf_counter()
            out = tree_sample(
                setup.model,
                prompts,
                rollouts,
                world.steps,
                0.7,
                setup.rewards.gold,
                generator,
                strength=args.strength,
                width=args.width,
            )
            wall.append(time.perf_counter() - start)
            gold = setup.rewards.gold(out.samples, prompts)
            sampled.append(float(gold.mean()))
            on_target.append(float((gold > 0.5).float().mean()))
            best.append(float(out.best_reward.mean()))
            cost = out.tree.evaluations / prompts.shape[0]
            costs.append(cost)
            n = max(1, round(cost / world.steps))
            flat = prompts.repeat_interleave(n)
            independent = sample_sde(
                setup.model, flat, world.steps, 0.7, torch.Generator().manual_seed(10_000 + seed)
            )
            plain_gold = setup.rewards.gold(independent.final, flat).view(-1, n)
            plain.append(float(plain_gold.mean()))
            best_of.append(float(plain_gold.max(1).values.mean()))
        n = max(1, round(np.mean(costs) / world.steps))
        print(
            f"| {rollouts} | {np.mean(costs):.0f} / {n * world.steps} (N = {n}) | "
            f"{np.mean(sampled):.3f} ± {np.std(sampled):.3f} | {np.mean(on_target):.2f} | "
            f"{np.mean(best):.3f} | {np.mean(best_of):.3f} | {np.mean(plain):.3f} | "
            f"{np.mean(wall):.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds first..first+seeds-1 (tune on others)"
    )
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument(
        "--dense-learning-rate", type=float, default=None, help="for every method but flow_grpo"
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help="flow_grpo always runs")
    parser.add_argument("--rollouts", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument(
        "--sections", nargs="+", default=["efficiency", "hacking", "steering", "tree"]
    )
    parser.add_argument("--updates", type=int, default=80)
    parser.add_argument("--hack-updates", type=int, default=150)
    parser.add_argument("--kl-coefs", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    parser.add_argument("--pretrain-steps", type=int, default=2000)
    parser.add_argument("--dataset", choices=["mixture", "digits"], default="mixture")
    parser.add_argument(
        "--hidden", type=int, default=None, help="velocity MLP width (default 128; 256 digits)"
    )
    parser.add_argument("--particles", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--systems", type=int, default=64)
    parser.add_argument("--strength", type=float, default=10.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    sections = {
        "efficiency": efficiency,
        "hacking": hacking,
        "steering": steering,
        "tree": tree_search,
    }
    for name in args.sections:
        sections[name](args)
    print(f"\nTotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
