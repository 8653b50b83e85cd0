"""Partial-credit code and tool-call rewards against binary pass/fail GRPO, on the reasoning
world's ``programs`` and ``tool_calls`` families.

Not a test: it trains. ``python benchmarks/code_rewards.py [--seeds 0 1] [--updates 12]`` prints,
per family and method, held-out accuracy (4 samples per held-out problem at temperature 1,
graded by the *verifier*: all unit tests pass in the sandbox / the call set equals the
reference) before RL and after, averaged over seeds, the trainer's exact-match accuracy curve
against training samples, and the ratios partial / binary.

Methods (rewards replace the outcome: ``combine`` with ``outcome: 0``, then GRPO):

- ``programs``: ``pass/fail`` = ``unit_tests`` with ``credit: binary``; ``VeRPO partial`` =
  ``unit_tests`` with ``credit: weighted`` (group difficulty weights, α = 1) and
  ``outcome_bonus: 1``.
- ``tool_calls``: ``exact`` = ``tool_calls`` with ``reward: exact``; ``ToolRL`` = ``tool_calls``
  with ``reward: toolrl`` (format + name/parameter/value matching).

The policy is small (2 layers, width 64) and its SFT short, so that everything fits in minutes on
two CPU cores; the SFT is given a few hundred demonstrations only so the start leaves room for RL.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch

from densereward.core.registry import build
from densereward.models.language import build_causal_lm, supervised_fine_tune
from densereward.pipeline import Recipe
from densereward.trainers.grpo import GRPOConfig
from densereward.worlds.reasoning.rollouts import policy_prompt, rollout
from densereward.worlds.reasoning.tasks import sample_problems
from densereward.worlds.reasoning.tasks.programs import PROGRAM_TEMPLATE, TEST_INPUTS
from densereward.worlds.reasoning.tasks.tool_calls import TOOLS
from densereward.worlds.reasoning.tokenizer import build_tokenizer
from densereward.worlds.reasoning.world import (
    EVAL_SEED,
    SFT_SEED,
    ReasoningSetup,
    ReasoningWorld,
    demonstrations,
    train_from_sft,
)

INPUTS = json.dumps([[x] for x in TEST_INPUTS])
UNIT_TESTS = {
    "kind": "unit_tests",
    "extract": "answer",
    "template": PROGRAM_TEMPLATE,
    "inputs": INPUTS,
    "test_timeout": 0.5,
}
SCHEMA = {name: list(parameters) for name, parameters in TOOLS.items()}
TOOL_CALLS = {"kind": "tool_calls", "schema": SCHEMA}


def method(signal: dict[str, Any]) -> dict[str, Any]:
    return {
        "signals": {"code": signal},
        "transforms": [{"kind": "combine", "weights": {"code": 1.0, "outcome": 0.0}}],
        "estimator": {"kind": "grpo", "reward": "reward"},
    }


FAMILIES = {
    "programs": {
        "max_new_tokens": 24,
        "verifier": {**UNIT_TESTS, "credit": "binary"},
        "methods": {
            "pass/fail": method({**UNIT_TESTS, "credit": "binary"}),
            "VeRPO partial": method({**UNIT_TESTS, "credit": "weighted", "outcome_bonus": 1.0}),
        },
    },
    "tool_calls": {
        "max_new_tokens": 32,
        "verifier": {**TOOL_CALLS, "reward": "exact"},
        "methods": {
            "exact": method({**TOOL_CALLS, "reward": "exact"}),
            "ToolRL": method({**TOOL_CALLS, "reward": "toolrl"}),
        },
    },
}


def make_setup(
    name: str,
    seed: int,
    sft_examples: int,
    max_new_tokens: int,
    size: tuple[int, int, int] = (2, 64, 2),
    sft_epochs: int = 2,
) -> ReasoningSetup:
    """``ReasoningSetup.build`` with the family's extended tokenizer (the world's own build uses
    the base vocabulary); ``size`` is the policy's (layers, width, heads)."""
    started = time.perf_counter()
    layers, width, heads = size
    world = ReasoningWorld(
        families=(name,),
        min_ops=1,
        max_ops=2,
        layers=layers,
        width=width,
        heads=heads,
        sft_examples=sft_examples,
        sft_epochs=sft_epochs,
        eval_problems=64,
        max_new_tokens=max_new_tokens,
    )
    tokenizer = build_tokenizer(families=world.families)
    policy = build_causal_lm(tokenizer, "gpt2", world.layers, world.width, world.heads, 128, seed)
    data = sample_problems(world.spec, world.sft_examples, SFT_SEED + seed)
    supervised_fine_tune(
        policy,
        tokenizer,
        [policy_prompt(s.problem) for s in data],
        demonstrations(data, 0.0, world.sft_corruptions, SFT_SEED + seed),
        epochs=world.sft_epochs,
        learning_rate=world.sft_learning_rate,
        seed=seed,
    )
    eval_set = [s.problem for s in sample_problems(world.spec, world.eval_problems, EVAL_SEED)]
    return ReasoningSetup(world, seed, tokenizer, policy, eval_set, time.perf_counter() - started)


def verified_accuracy(setup: ReasoningSetup, policy: Any, verifier: Any) -> float:
    """Held-out accuracy by the verifier: 4 samples per problem at temperature 1."""
    batch, _, _ = rollout(
        policy,
        setup.tokenizer,
        setup.eval_set,
        4,
        setup.config.max_new_tokens,
        1.0,
        torch.Generator().manual_seed(0),
    )
    scored = verifier(batch, "verified")
    return float(scored.step("verified").sum() / len(batch))


def samples_to_reach(curve: list[tuple[float, float]], target: float) -> float:
    for samples, accuracy in curve:
        if accuracy >= target - 1e-9:
            return samples
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--updates", type=int, default=16)
    parser.add_argument("--sft-examples", type=int, default=3000)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    parser.add_argument(
        "--size", type=int, nargs=3, default=[2, 64, 2], help="policy layers, width, heads"
    )
    parser.add_argument("--sft-epochs", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    args = parser.parse_args()
    torch.set_num_threads(2)
    log = lambda text: print(text, flush=True)  # noqa: E731
    started = time.perf_counter()
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for name in args.families:
        spec = FAMILIES[name]
        verifier_spec = build("signal", spec["verifier"])
        for seed in args.seeds:
            setup = make_setup(
                name,
                seed,
                args.sft_examples,
                spec["max_new_tokens"],
                tuple(args.size),
                args.sft_epochs,
            )
            verifier = verifier_spec.bind(setup.context({}))
            start_accuracy = verified_accuracy(setup, setup.policy, verifier)
            log(f"{name} seed {seed}: SFT {setup.sft_seconds:.0f} s, start {start_accuracy:.3f}")
            config = GRPOConfig(
                updates=args.updates,
                prompts_per_update=8,
                group_size=8,
                max_new_tokens=spec["max_new_tokens"],
                learning_rate=args.learning_rate,
                eval_every=8,
                seed=seed,
            )
            for label, recipe in spec["methods"].items():
                begun = time.perf_counter()
                result = train_from_sft(setup, config, Recipe.from_dict(recipe))
                curve = [
                    (row["samples"], row["eval_accuracy"])
                    for row in result.metrics
                    if "eval_accuracy" in row
                ]
                final = verified_accuracy(setup, result.policy, verifier)
                rows.setdefault((name, label), []).append(
                    {"start": start_accuracy, "final": final, "curve": curve}
                )
                log(
                    f"  {label}: verified {start_accuracy:.3f} -> {final:.3f}, exact-match "
                    f"{curve[0][1]:.3f} -> {curve[-1][1]:.3f} in {time.perf_counter() - begun:.0f} s"
                )
    log(
        f"\ntotal {time.perf_counter() - started:.0f} s, seeds {args.seeds}, updates {args.updates}"
    )
    log(
        "\n| family | method | verified accuracy: SFT → after RL (mean ± sd over seeds) | "
        "exact-match curve (samples: accuracy) |"
    )
    log("|---|---|---|---|")
    for (name, label), runs in rows.items():
        finals = np.array([r["final"] for r in runs])
        starts = np.array([r["start"] for r in runs])
        curve = np.mean([[a for _, a in r["curve"]] for r in runs], axis=0)
        points = ", ".join(
            f"{int(s)}: {a:.3f}" for (s, _), a in zip(runs[0]["curve"], curve, strict=True)
        )
        log(
            f"| {name} | {label} | {starts.mean():.3f} → {finals.mean():.3f} ± "
            f"{finals.std():.3f} | {points} |"
        )
    log(
        "\n| family | partial / binary: final verified accuracy | gain over SFT, partial / binary "
        "| samples to reach binary's final exact-match accuracy, partial / binary |"
    )
    log("|---|---|---|---|")
    for name in args.families:
        binary, partial = (rows[(name, label)] for label in FAMILIES[name]["methods"])
        b_final = np.mean([r["final"] for r in binary])
        p_final = np.mean([r["final"] for r in partial])
        start = np.mean([r["start"] for r in binary])
        ratio = p_final / b_final if b_final > 0 else float("nan")
        gain = (p_final - start) / (b_final - start) if b_final != start else float("nan")
        b_curve = np.mean([[a for _, a in r["curve"]] for r in binary], axis=0)
        p_curve = np.mean([[a for _, a in r["curve"]] for r in partial], axis=0)
        axis = [s for s, _ in binary[0]["curve"]]
        target = b_curve[-1]
        reach = samples_to_reach(list(zip(axis, p_curve, strict=True)), target)
        own = samples_to_reach(list(zip(axis, b_curve, strict=True)), target)
        log(f"| {name} | {ratio:.3f} | {gain:.3f} | {reach:.0f} / {own:.0f} |")


if __name__ == "__main__":
    main()
