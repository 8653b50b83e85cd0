"""TRL's GRPO with a process reward against TRL's outcome-only GRPO, on the reasoning world.

``python benchmarks/trl_grpo.py [--seeds 2] [--steps 40] [--batch 16] [--generations 4]
[--sft-examples 6000] [--prm-rows 3000] [--eval-problems 200] [--eval-every 10]
[--timing-rounds 8]``

Per seed, one fixture: the world's tokenizer; a small GPT-2 policy supervised on the world's
demonstrations (``--sft-noise`` of them carry one controlled mistake, so the policy makes step
errors); a process reward model trained by ``adapters.trl.train_stepwise_prm`` on TRL-format
stepwise rows whose labels are the world's exact verifier (``grade(...).labels``) on corrupted
demonstrations. Then two arms start from the same policy and seed:

- ``outcome``: ``trl.GRPOTrainer`` with one reward, 1 when the answer is right (TRL's advantage);
- ``process``: ``DenseRewardGRPOTrainer`` with the same TRL reward as outcome and the PRM as the
  ``prm`` signal, ``step_grpo`` (process z-scored per group, return-to-go, plus the outcome GRPO
  advantage), per-token advantages.

Held-out greedy accuracy (``--eval-problems`` problems none of the arms trains on) is printed
against completions seen, and the final accuracy per seed with the mean ratio process/outcome.

Time per step, interleaved round by round on the same generation batch so that load on the
machine hits all alike: generation + scoring (``_generate_and_score_completions``) + loss +
backward, for plain ``GRPOTrainer``, the subclass with an outcome-only recipe (the adapter's own
cost) and the subclass with the PRM recipe (adapter plus the PRM's forward pass). Medians and
ratios to plain TRL are printed.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from densereward.adapters.text import TextScorer
from densereward.adapters.trl import DenseRewardGRPOTrainer, stepwise_examples, train_stepwise_prm
from densereward.models.language import (
    build_causal_lm,
    decode_responses,
    sample,
    supervised_fine_tune,
)
from densereward.pipeline import Recipe
from densereward.worlds.reasoning.rollouts import policy_prompt
from densereward.worlds.reasoning.tasks import (
    CORRUPTIONS,
    STEP_TAG,
    Difficulty,
    TaskSpec,
    grade,
    parse_response,
    sample_problems,
)
from densereward.worlds.reasoning.tokenizer import build_tokenizer
from densereward.worlds.reasoning.world import demonstrations

SPEC = TaskSpec(("arithmetic",), Difficulty(2, 3))
PROCESS = {
    "signals": {"prm": {"kind": "prm"}},
    "estimator": {"kind": "step_grpo", "process": "prm"},
}
OUTCOME_ONLY = {"estimator": {"kind": "grpo", "reward": None, "eps": 1e-4, "unbiased_std": True}}


def correct(prompts: list[str], completions: list[str], answer: list[str], **_: Any) -> list[float]:
    """TRL reward: 1 when the completion's answer is the dataset's ``answer``."""
    return [float(parse_response(c)[1] == a) for c, a in zip(completions, answer, strict=True)]


def stepwise_rows(tokenizer_bos: str, count: int, seed: int, noise: float) -> list[dict[str, Any]]:
    """TRL stepwise rows: the world's demonstrations (a ``noise`` fraction corrupted), cut at the
    step tags, each step labelled by the exact verifier (1 before the first wrong step)."""
    data = sample_problems(SPEC, count, seed)
    responses = demonstrations(data, noise, tuple(CORRUPTIONS), seed)
    rows = []
    for item, response in zip(data, responses, strict=True):
        verdict = grade(item.problem, response)
        if verdict.steps:
            rows.append(
                {
                    "prompt": tokenizer_bos + policy_prompt(item.problem),
                    "completions": list(verdict.steps),
                    "labels": [bool(v) for v in verdict.labels],
                }
            )
    return rows


def held_out_accuracy(model: Any, tokenizer: Any, problems: list[Any], max_tokens: int) -> float:
    rows, _ = sample(model, tokenizer, [policy_prompt(p) for p in problems], 1, max_tokens, 0.0)
    texts = decode_responses(tokenizer, rows)
    return float(np.mean([grade(p, t).correct for p, t in zip(problems, texts, strict=True)]))


class Accuracy(TrainerCallback):  # type: ignore[misc]
    """Held-out accuracy every ``every`` steps."""

    def __init__(self, tokenizer: Any, problems: list[Any], every: int, max_tokens: int) -> None:
        self.tokenizer, self.problems, self.every, self.max_tokens = (
            tokenizer,
            problems,
            every,
            max_tokens,
        )
        self.curve: list[tuple[int, float]] = []

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **_: Any) -> None:
        if state.global_step % self.every == 0:
            accuracy = held_out_accuracy(model, self.tokenizer, self.problems, self.max_tokens)
            model.train()
            self.curve.append((state.global_step, accuracy))


def grpo_config(args: argparse.Namespace, seed: int, steps: int) -> GRPOConfig:
    return GRPOConfig(
        output_dir=tempfile.mkdtemp(),
        use_vllm=False,
        bf16=False,
        gradient_checkpointing=False,
        num_generations=args.generations,
        per_device_train_batch_size=args.batch,
        max_completion_length=args.max_tokens,
        learning_rate=args.learning_rate,
        max_steps=steps,
        logging_steps=10_000,
        save_strategy="no",
        report_to="none",
        seed=seed,
        dataloader_pin_memory=False,
        disable_tqdm=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--sft-examples", type=int, default=6000)
    parser.add_argument("--sft-epochs", type=int, default=3)
    parser.add_argument("--sft-noise", type=float, default=0.3)
    parser.add_argument("--prm-rows", type=int, default=3000)
    parser.add_argument("--prm-epochs", type=int, default=4)
    parser.add_argument("--train-problems", type=int, default=2000)
    parser.add_argument("--eval-problems", type=int, default=200)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--timing-rounds", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    tokenizer = build_tokenizer()
    bos = tokenizer.bos_token
    problems = [s.problem for s in sample_problems(SPEC, args.eval_problems, 999)]
    finals: dict[str, list[float]] = {"outcome": [], "process": []}
    timings: dict[str, list[float]] = {"TRL GRPO": [], "subclass, outcome": [], "subclass, PRM": []}
    for seed in range(args.seeds):
        start = time.perf_counter()
        policy = build_causal_lm(tokenizer, "gpt2", args.layers, args.width, 4, 256, seed)
        data = sample_problems(SPEC, args.sft_examples, 100 + seed)
        supervised_fine_tune(
            policy,
            tokenizer,
            [policy_prompt(s.problem) for s in data],
            demonstrations(data, args.sft_noise, tuple(CORRUPTIONS), 100 + seed),
            epochs=args.sft_epochs,
            learning_rate=2e-3,
            seed=seed,
        )
        sft_accuracy = held_out_accuracy(policy, tokenizer, problems, args.max_tokens)

        rows = stepwise_rows(bos, args.prm_rows, 200 + seed, 0.5)
        check = stepwise_rows(bos, 300, 300 + seed, 0.5)
        prm = train_stepwise_prm(
            Dataset.from_list(rows), policy, tokenizer, STEP_TAG, epochs=args.prm_epochs, seed=seed
        )
        examples = stepwise_examples(check, tokenizer, STEP_TAG)
        prm_accuracy = float(
            ((prm.score(examples.rows, examples.positions) >= 0.5) == (examples.labels >= 0.5))
            .float()
            .mean()
        )
        print(
            f"seed {seed}: SFT accuracy {sft_accuracy:.3f}, PRM step accuracy "
            f"{prm_accuracy:.3f} on held-out stepwise rows ({time.perf_counter() - start:.0f} s)"
        )

        train_data = sample_problems(SPEC, args.train_problems, 400 + seed)
        dataset = Dataset.from_dict(
            {
                "prompt": [bos + policy_prompt(s.problem) for s in train_data],
                "answer": [s.problem.answer for s in train_data],
            }
        )

        def trainer(
            kind: str,
            steps: int,
            model: Any = policy,
            s: int = seed,
            dataset: Dataset = dataset,
            prm: Any = prm,
        ) -> Any:
            config = grpo_config(args, s, steps)
            common = {
                "model": copy.deepcopy(model),
                "reward_funcs": [correct],
                "args": config,
                "train_dataset": dataset,
                "processing_class": tokenizer,
            }
            if kind == "outcome":
                return GRPOTrainer(**common)
            recipe = PROCESS if kind == "process" else OUTCOME_ONLY
            models = {"prm": prm} if kind == "process" else {}
            scorer = TextScorer(
                Recipe.from_dict(recipe), tokenizer, step_tag=STEP_TAG, models=models
            )
            return DenseRewardGRPOTrainer(**common, scorer=scorer)

        for arm in ("outcome", "process"):
            run = trainer(arm, args.steps)
            callback = Accuracy(tokenizer, problems, args.eval_every, args.max_tokens)
            run.add_callback(callback)
            torch.manual_seed(seed)
            began = time.perf_counter()
            run.train()
            curve = [(0, sft_accuracy), *callback.curve]
            seen = ", ".join(f"{step * args.batch}:{acc:.3f}" for step, acc in curve)
            print(
                f"  {arm:8s} completions seen:accuracy  {seen}  ({time.perf_counter() - began:.0f} s)"
            )
            finals[arm].append(curve[-1][1])

        # time per step, interleaved on one generation batch
        runs = {
            "TRL GRPO": trainer("outcome", 1),
            "subclass, outcome": trainer("outcome-recipe", 1),
            "subclass, PRM": trainer("process", 1),
        }
        batch = [dict(dataset[i]) for i in range(args.batch // args.generations)]
        batch = [row for row in batch for _ in range(args.generations)]
        for run in runs.values():  # set by ``Trainer.train``, read by TRL's loss
            run.current_gradient_accumulation_steps = run.args.gradient_accumulation_steps
        for _ in range(args.timing_rounds + 1):
            for name, run in runs.items():
                run.model.train()
                torch.manual_seed(seed)
                began = time.perf_counter()
                out = run._generate_and_score_completions([dict(x) for x in batch])
                loss = run.compute_loss(run.model, out)
                loss.backward()
                run.model.zero_grad()
                timings[name].append(time.perf_counter() - began)
        for name in runs:  # the first round warms up
            del timings[name][-(args.timing_rounds + 1)]

    print("\nfinal held-out accuracy per seed:")
    for arm, values in finals.items():
        print(f"  {arm:8s} {' '.join(f'{v:.3f}' for v in values)}  mean {np.mean(values):.3f}")
    outcome_mean = float(np.mean(finals["outcome"]))
    ratio = float(np.mean(finals["process"])) / outcome_mean if outcome_mean > 0 else float("nan")
    print(f"  process / outcome (means): {ratio:.3f}")
    base = statistics.median(timings["TRL GRPO"])
    print("\ntime per step (generate + score + loss + backward), median over interleaved rounds:")
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"  {name:18s} {median * 1e3:7.1f} ms  x{median / base:.3f}")


if __name__ == "__main__":
    main()
