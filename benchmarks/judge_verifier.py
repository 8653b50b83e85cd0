"""A generative verifier as an LLM judge on the reasoning world, asked over HTTP through the judge
client: first-error F1, best-of-8, GRPO sample efficiency as a process reward (gated and ungated),
and its robustness to master keys before and after hardening.

Not a test: it trains. ``python benchmarks/judge_verifier.py [--seeds 0 1] [--updates 50]``.

The verifier is a causal LM trained (once, from scratch, seed-independent data) to answer yes/no
to each step of ProcessBench-format solutions of the reasoning recipe's tasks with exact labels;
it is served by ``judges.chat_server`` on loopback and every score below is read by the
``judge_step`` signal from the served log-probabilities (``P(yes)``), as a remote judge would be.

1. first-error F1 on 400 held-out items (exact labels) per seed, against the seed's PRM trained on
   exact labels (the reasoning world's ``prm_exact``);
2. best-of-8 reranking of the SFT policy's samples on the held-out problems (min over steps);
3. GRPO from the SFT policy: outcome-only, + verifier (step_grpo, gamma 0), + verifier gated by
   the outcome (G-RA); samples to outcome-only's final accuracy and the ratio;
4. robustness: FPR per master key and FNR on correct solutions for the verifier, the verifier with
   the prefilter, and the verifier hardened by training with master-key negatives — negatives
   only for the "trained" keys, so the held-out keys measure generalisation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from densereward.adapters.server import serving
from densereward.core.components import SignalContext, TextFormat
from densereward.core.registry import build
from densereward.core.segments import Groups, aggregate_segments
from densereward.evaluation.process import best_of_n_accuracy, first_error_f1
from densereward.judges.chat_server import make_chat_app
from densereward.judges.robustness import (
    CORRECT,
    EMPTY,
    FIRST_SENTENCE,
    probe_batch,
    robustness_rows,
)
from densereward.judges.verifier import (
    VERIFIER_PROMPT,
    VerifierConfig,
    first_errors,
    records_batch,
    train_verifier,
)
from densereward.pipeline import Recipe
from densereward.runs import RunRecipe, resolve_recipe
from densereward.signals.judges import shipped_prompt
from densereward.worlds.reasoning.evaluate import prm_first_errors
from densereward.worlds.reasoning.export import processbench_records
from densereward.worlds.reasoning.rollouts import rollout
from densereward.worlds.reasoning.tasks import ANSWER_MARK, STEP_TAG, sample_problems
from densereward.worlds.reasoning.world import train_from_sft

FORMAT = TextFormat(STEP_TAG, ANSWER_MARK)
TRAINED_KEYS = (":", "Thought process:", "Solution", " ", "解", EMPTY)
HELD_OUT_KEYS = (
    ".",
    "Let's solve this problem step by step.",
    "かいせつ",
    ",",
    "Respuesta",
    FIRST_SENTENCE,
)


def judge_spec(url: str, **extra) -> dict:
    return {
        "kind": "judge_step",
        "base_url": url,
        "judge": "verifier",
        "prompt": str(shipped_prompt(VERIFIER_PROMPT)),
        "max_tokens": 1,
        "top_logprobs": 5,
        "concurrency": 4,
        **extra,
    }


def score(url: str, batch, **extra):
    bound = build("signal", judge_spec(url, **extra)).bind(SignalContext(text_format=FORMAT))
    try:
        return bound(batch, "verifier")
    finally:
        bound.close()


def samples_to_reach(curve, target: float) -> float:
    return next((s for s, a in curve if a >= target - 1e-9), float("inf"))


def table(log, title: str, header: list[str], rows) -> None:
    log(f"\n{title}")
    log("| " + " | ".join(header) + " |")
    log("|" + "---|" * len(header))
    for row in rows:
        log("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--updates", type=int, default=50)
    parser.add_argument("--train-items", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--skip-grpo", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    log = lambda text: print(text, flush=True)  # noqa: E731
    recipe = RunRecipe.from_yaml(resolve_recipe("reasoning"))
    spec = recipe.world.spec
    config = VerifierConfig(epochs=args.epochs)

    train = processbench_records(sample_problems(spec, args.train_items, 1), seed=1)
    negatives, _ = probe_batch(
        processbench_records(sample_problems(spec, 300, 2), seed=2, error_fraction=0.0),
        FORMAT,
        TRAINED_KEYS,
    )
    started = time.perf_counter()
    plain = train_verifier(records_batch(train, FORMAT), FORMAT, config)
    log(
        f"verifier: {plain.examples} examples, loss {plain.losses[0]:.3f} -> "
        f"{plain.losses[-1]:.3f}, {time.perf_counter() - started:.0f} s"
    )
    started = time.perf_counter()
    hardened = train_verifier(records_batch(train, FORMAT), FORMAT, config, negatives=negatives)
    log(
        f"hardened verifier: {hardened.examples} examples, loss {hardened.losses[-1]:.3f}, "
        f"{time.perf_counter() - started:.0f} s"
    )

    report: dict = {
        "seeds": args.seeds,
        "updates": args.updates,
        "f1": {},
        "best_of_8": {},
        "curves": {},
        "robustness": {},
    }
    apps = {
        name: make_chat_app(v.model, v.tokenizer, model_name="verifier", max_new_tokens_limit=4)
        for name, v in (("verifier", plain), ("hardened", hardened))
    }
    with serving(apps["verifier"]) as url_plain, serving(apps["hardened"]) as url_hard:
        urls = {"verifier": f"{url_plain}/v1", "hardened": f"{url_hard}/v1"}

        # 4. robustness, on held-out correct solutions
        held_out = processbench_records(sample_problems(spec, 200, 777), seed=7, error_fraction=0.0)
        probes, kinds = probe_batch(held_out, FORMAT, (*TRAINED_KEYS, *HELD_OUT_KEYS))
        for name, url, extra in (
            ("verifier", urls["verifier"], {}),
            ("verifier + prefilter", urls["verifier"], {"prefilter": True}),
            ("hardened verifier", urls["hardened"], {}),
            ("hardened + prefilter", urls["hardened"], {"prefilter": True}),
        ):
            rows = robustness_rows(score(url, probes, **extra), kinds, "verifier")
            report["robustness"][name] = {r.probe: r.rate for r in rows}
        names = list(report["robustness"])
        order = [*TRAINED_KEYS, *HELD_OUT_KEYS, CORRECT]
        table(
            log,
            "4. robustness: FPR per probe (keys marked * were among the hardened "
            "verifier's negatives), FNR on correct solutions; 200 held-out problems",
            ["probe", *names],
            (
                [
                    ("* " if k in TRAINED_KEYS else "")
                    + (repr(k) if k != CORRECT else "FNR: correct"),
                    *(f"{report['robustness'][n][k]:.3f}" for n in names),
                ]
                for k in order
            ),
        )
        for group, keys in (("trained keys", TRAINED_KEYS), ("held-out keys", HELD_OUT_KEYS)):
            log(
                f"mean FPR on {group}: "
                + ", ".join(
                    f"{n} {np.mean([report['robustness'][n][k] for k in keys]):.3f}" for n in names
                )
            )

        for seed in args.seeds:
            world = recipe.world.setup(seed)
            world.models(["prm_exact"])
            log(
                f"seed {seed}: SFT {world.sft_seconds:.0f} s, reward models "
                f"{ {k: round(v) for k, v in world.timings.items()} } s"
            )
            # 1. first-error F1
            items = processbench_records(sample_problems(spec, 400, 555_000 + seed), seed=seed)
            labels = [r["label"] for r in items]
            batch = records_batch(items, FORMAT)
            f1 = {
                "prm_exact": first_error_f1(
                    labels, prm_first_errors(world.cache["prm_exact"], world.tokenizer, items)
                ).f1
            }
            for name, url in urls.items():
                started = time.perf_counter()
                scored = score(url, batch)
                f1[name] = first_error_f1(labels, first_errors(scored, "verifier")).f1
                f1[f"{name} steps/s"] = batch.num_steps / (time.perf_counter() - started)
            report["f1"][seed] = f1
            log(f"  first-error F1: {f1}")
            # 2. best-of-8
            samples, _, _ = rollout(
                world.policy,
                world.tokenizer,
                world.eval_set,
                8,
                world.config.max_new_tokens,
                generator=torch.Generator().manual_seed(seed),
            )
            correct, group = samples.episode("outcome"), samples.episode("group")
            bon = {
                "random pick": float(correct.mean()),
                "oracle": float(Groups.from_labels(group).max(correct).mean()),
            }
            from densereward.models.language import step_end_positions, trajectories_to_rows

            prm = (
                world.cache["prm_exact"]
                .score(trajectories_to_rows(samples), step_end_positions(samples))
                .double()
            )
            bon["prm_exact / min"] = best_of_n_accuracy(
                aggregate_segments(prm, samples.segments, "min"), correct, group
            )
            for name, url in urls.items():
                values = score(url, samples).step("verifier").double()
                bon[f"{name} / min"] = best_of_n_accuracy(
                    aggregate_segments(values, samples.segments, "min"), correct, group
                )
            report["best_of_8"][seed] = bon
            log(f"  best-of-8: {bon}")
            if args.skip_grpo:
                continue
            # 3. GRPO
            trainer = dataclasses.replace(recipe.trainer, seed=seed, updates=args.updates)
            judge = {"verifier": judge_spec(urls["verifier"])}
            methods = {
                "outcome": {"estimator": {"kind": "grpo", "reward": None}},
                "verifier": {
                    "signals": judge,
                    "estimator": {
                        "kind": "step_grpo",
                        "process": "verifier",
                        "gamma": 0.0,
                        "outcome_weight": 1.0,
                    },
                },
                "gated verifier": {
                    "signals": judge,
                    "transforms": [
                        {
                            "kind": "gate",
                            "source": "verifier",
                            "gate": "verdict",
                            "threshold": 1.0,
                            "target": "process",
                        }
                    ],
                    "estimator": {
                        "kind": "step_grpo",
                        "process": "process",
                        "gamma": 0.0,
                        "outcome_weight": 1.0,
                    },
                },
            }
            for name, method in methods.items():
                started = time.perf_counter()
                result = train_from_sft(world, trainer, Recipe.from_dict(method, name))
                curve = [
                    (r["samples"], r["eval_accuracy"])
                    for r in result.metrics
                    if "eval_accuracy" in r
                ]
                report["curves"].setdefault(name, {})[seed] = curve
                log(
                    f"  {name}: {curve[0][1]:.3f} -> {curve[-1][1]:.3f} in "
                    f"{time.perf_counter() - started:.0f} s"
                )

    seeds = args.seeds
    table(
        log,
        "1. first-error F1 (x100) on 400 held-out items per seed",
        ["judge", *(f"seed {s}" for s in seeds), "mean"],
        (
            [
                n,
                *(f"{100 * report['f1'][s][n]:.1f}" for s in seeds),
                f"{100 * np.mean([report['f1'][s][n] for s in seeds]):.1f}",
            ]
            for n in ("prm_exact", "verifier", "hardened")
        ),
    )
    log(
        "judge throughput over HTTP (steps/s): "
        + ", ".join(
            f"{n} {np.mean([report['f1'][s][f'{n} steps/s'] for s in seeds]):.0f}"
            for n in ("verifier", "hardened")
        )
    )
    bon_names = list(report["best_of_8"][seeds[0]])
    table(
        log,
        "2. best-of-8 accuracy on the held-out problems (SFT samples)",
        ["pick", *(f"seed {s}" for s in seeds), "mean"],
        (
            [
                n,
                *(f"{report['best_of_8'][s][n]:.3f}" for s in seeds),
                f"{np.mean([report['best_of_8'][s][n] for s in seeds]):.3f}",
            ]
            for n in bon_names
        ),
    )
    if report["curves"]:
        rows = []
        for name, per_seed in report["curves"].items():
            needs, finals = [], []
            for s in seeds:
                target = report["curves"]["outcome"][s][-1][1]
                needs.append(samples_to_reach(per_seed[s], target))
                finals.append(per_seed[s][-1][1])
            own = [
                samples_to_reach(
                    report["curves"]["outcome"][s], report["curves"]["outcome"][s][-1][1]
                )
                for s in seeds
            ]
            ratio = [
                n / o if np.isfinite(n) else float("inf") for n, o in zip(needs, own, strict=True)
            ]
            rows.append(
                [
                    name,
                    " / ".join(f"{f:.3f}" for f in finals),
                    f"{np.mean(finals):.3f}",
                    " / ".join("never" if not np.isfinite(n) else f"{n:,.0f}" for n in needs),
                    " / ".join("inf" if not np.isfinite(r) else f"{r:.2f}" for r in ratio),
                ]
            )
        table(
            log,
            f"3. GRPO, {args.updates} updates: final held-out accuracy per seed, samples "
            "to outcome-only's final accuracy and the ratio to outcome-only's own",
            ["method", "final per seed", "mean", "samples to target", "ratio"],
            rows,
        )
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, default=float, ensure_ascii=False))


if __name__ == "__main__":
    main()
