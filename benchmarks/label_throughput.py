"""Labeling throughput: the resumable Ray Data job against the in-process labeler, same data.

``python benchmarks/label_throughput.py [--copies 16] [--repeats 3] [--threads 1]``

The data are the ``densereward label --example`` inputs (a tiny SFT prover, its rollouts),
repeated ``--copies`` times under new ids. Three ways to label every tagged step with Monte-Carlo
values, in interleaved repetitions so that load on the machine hits all of them alike:

- ``in-process``: ``monte_carlo_labels`` on all rollouts in one call (prefixes batched 512 at
  a time, each prefix's KV cache shared by its completions): the baseline, no engine;
- ``job --local``: the engine in this process, shard after shard (what resumability costs:
  smaller batches, a Parquet file and a manifest write per shard);
- ``job on Ray``: the Ray Data pipeline on a private local instance, one actor per CPU, wall
  time from ``ray.init`` to the last commit (start-up included: what a user waits for).

Labels are the tagged steps given an MC value; tokens are the completions' generated tokens.
Prints the median of each and the ratio to the in-process labeler.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from densereward.labeling.jobs import read_labels, run_label_job
from densereward.labeling.mc import Prover, monte_carlo_labels
from densereward.worlds.reasoning.label_job import (
    Rollout,
    label_job,
    load_model,
    read_rollouts,
    write_example,
    write_rollouts,
)
from densereward.worlds.reasoning.rollouts import policy_prompt
from densereward.worlds.reasoning.tasks import STEP_TAG, grade, parse_response
from densereward.worlds.reasoning.tokenizer import build_tokenizer


def in_process(rollouts: list[Rollout], prover_path: Path, n: int) -> tuple[int, int]:
    """Labels and generated tokens of ``monte_carlo_labels`` over every rollout at once."""
    world, policy = load_model(prover_path, "policy", "--prover")
    distinct = list(dict.fromkeys(r.problem for r in rollouts))
    position = {p: i for i, p in enumerate(distinct)}
    prover = Prover(
        policy,  # type: ignore[arg-type]
        build_tokenizer(),
        [policy_prompt(p) for p in distinct],
        lambda i, text: grade(distinct[i], text).correct,
        world.max_new_tokens,
    )
    steps = [list(parse_response(r.response)[0])[: r.response.count(STEP_TAG)] for r in rollouts]
    labels = monte_carlo_labels(
        prover, [position[r.problem] for r in rollouts], steps, STEP_TAG, n, 0, False
    )
    return sum(len(s) for s in labels.soft), labels.generated_tokens


def job(rollouts: Path, prover: Path, n: int, local: bool, scratch: Path) -> tuple[int, int]:
    out = Path(tempfile.mkdtemp(dir=scratch))
    summary = run_label_job(label_job(rollouts, prover, None, n), out, local=local, progress=False)
    table = read_labels(out)
    labels = sum(1 for s in table.column("label_source").to_pylist() if s == "monte_carlo")
    shutil.rmtree(out)
    return labels, summary.generated_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=16, help="times the example's 64 rollouts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rollouts-per-step", type=int, default=8)
    parser.add_argument("--inputs", type=Path, default=Path(tempfile.gettempdir()) / "label-bench")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of the two in-process ways (default: torch's; Ray's actors have 1)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    example, made = write_example(args.inputs)
    if made:
        print(f"made the example inputs in {made:.1f} s")
    base = read_rollouts(example.rollouts)
    rollouts = [
        Rollout(f"{copy}/{r.id}", r.problem, r.response)
        for copy in range(args.copies)
        for r in base
    ]
    data = args.inputs / f"rollouts-x{args.copies}.jsonl"
    write_rollouts(rollouts, data)
    scratch = Path(tempfile.mkdtemp())
    print(
        f"{len(rollouts)} rollouts, {args.rollouts_per_step} completions per step, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    ways = {
        "in-process": lambda: in_process(rollouts, example.prover, args.rollouts_per_step),
        "job --local": lambda: job(data, example.prover, args.rollouts_per_step, True, scratch),
        "job on Ray": lambda: job(data, example.prover, args.rollouts_per_step, False, scratch),
    }
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    counts: dict[str, tuple[int, int]] = {}
    for repeat in range(args.repeats):
        for name, way in ways.items():
            started = time.perf_counter()
            counts[name] = way()
            seconds[name].append(time.perf_counter() - started)
            print(f"  repeat {repeat}: {name:<12} {seconds[name][-1]:6.2f} s")
    shutil.rmtree(scratch)
    base_rate = None
    print(f"\n{'':<12} {'seconds':>8} {'labels/s':>10} {'tokens/s':>10} {'ratio':>6}")
    for name in ways:
        wall = statistics.median(seconds[name])
        labels, tokens = counts[name]
        rate = labels / wall
        base_rate = base_rate or rate
        print(f"{name:<12} {wall:8.2f} {rate:10.1f} {tokens / wall:10.0f} {rate / base_rate:6.2f}")


if __name__ == "__main__":
    main()
