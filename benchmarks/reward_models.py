"""Reward models from preferences on the reasoning world: held-out pairwise accuracy per loss.

Not a test: it trains. ``python benchmarks/reward_models.py [--seeds 0 1] [--epochs 3]``.

Per seed, the backbone is the seed's SFT policy (the reasoning recipe's world) and every reward
model starts from it. Data come from the reasoning world's tasks with three quality levels per
problem: the canonical solution (every step right), a "miracle" solution (a step that nothing
derives, the final answer still right) and a wrong-answer corruption. Each loss sees what its
format holds:

- ``bt``: pairs canonical ≻ wrong, and miracle ≻ wrong;
- ``bt_ties``: the same pairs plus pairs of two different wrong corruptions marked as ties;
- ``plackett_luce``: lists [canonical, miracle, wrong];
- ``ordinal``: single solutions graded 2 / 1 / 0;
- ``bt`` × 4: a bootstrap ensemble of four members (the mean is the reward).

Measured on 400 held-out problems: pairwise accuracy canonical vs wrong (the usual
preference pairs), miracle vs wrong, and canonical vs miracle (whether the model sees the
process, not only the answer); and RewardMATH's format, one correct solution (the canonical) against
three flawed ones (two wrong answers and the miracle): Acc (the correct one scored above all) and
MRR.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from densereward.evaluation.process import one_vs_many, pairwise_accuracy
from densereward.models.reward_model import build_reward_model, score_texts
from densereward.runs import RunRecipe, resolve_recipe
from densereward.trainers.reward_model import Comparisons, RewardModelConfig, train_reward_model
from densereward.worlds.reasoning.tasks import corrupt, render_response, sample_problems


def three_levels(spec, n: int, seed: int) -> list[tuple[str, str, str, str, str]]:
    """(prompt, canonical, miracle, wrong, other wrong) per problem where all four exist."""
    rng = np.random.default_rng(seed)
    out = []
    for sample in sample_problems(spec, n, seed):
        problem = sample.problem
        miracle = corrupt(sample, "miracle", rng)
        wrong = [
            corrupt(sample, str(rng.choice(["arithmetic", "operand", "skip"])), rng)
            for _ in range(6)
        ]
        wrong = [w for w in wrong if not w.final_answer_correct]
        texts = {render_response(w.steps, w.answer) for w in wrong}
        if not miracle.final_answer_correct or len(texts) < 2:
            continue
        first, second = sorted(texts)[:2]
        prompt = problem.prompt + "=?"
        out.append(
            (
                prompt,
                problem.response,
                render_response(miracle.steps, miracle.answer),
                first,
                second,
            )
        )
    return out


def data_for(loss: str, rows) -> Comparisons:
    if loss in ("bt", "bt_ties"):
        lists = [[p + c, p + w] for p, c, _, w, _ in rows] + [
            [p + m, p + w] for p, _, m, w, _ in rows
        ]
        tie = [False] * len(lists)
        if loss == "bt_ties":
            lists += [[p + w, p + v] for p, _, _, w, v in rows]
            tie += [True] * len(rows)
        return Comparisons(lists, np.asarray(tie))
    if loss == "plackett_luce":
        return Comparisons([[p + c, p + m, p + w] for p, c, m, w, _ in rows])
    lists = [[p + t] for p, c, m, w, _ in rows for t in (c, m, w)]
    grades = np.asarray([g for _ in rows for g in (2, 1, 0)])
    return Comparisons(lists, grades=grades, levels=3)


def held_out(model, tokenizer, rows) -> tuple[float, ...]:
    """Pairwise accuracy canonical ≻ wrong, miracle ≻ wrong, canonical ≻ miracle, then
    RewardMATH's Acc and MRR of the canonical solution against the three flawed ones (two wrong
    answers and the miracle), ties counted against."""
    canonical, miracle, wrong, other = (
        score_texts(model, tokenizer, [r[0] + r[k] for r in rows]).mean(1) for k in (1, 2, 3, 4)
    )
    ranking = one_vs_many(canonical, torch.stack([wrong, other, miracle], 1))
    return (
        pairwise_accuracy(canonical, wrong),
        pairwise_accuracy(miracle, wrong),
        pairwise_accuracy(canonical, miracle),
        ranking.accuracy,
        ranking.mrr,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--problems", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    recipe = RunRecipe.from_yaml(resolve_recipe("reasoning"))
    spec = recipe.world.spec
    runs = {
        "bt": ("bt", 1),
        "bt_ties": ("bt_ties", 1),
        "plackett_luce": ("plackett_luce", 1),
        "ordinal": ("ordinal", 1),
        "bt x4 ensemble": ("bt", 4),
    }
    table: dict[str, list[tuple[float, ...]]] = {name: [] for name in runs}
    for seed in args.seeds:
        world = recipe.world.setup(seed)
        train_rows = three_levels(spec, args.problems, 10 + seed)
        test_rows = three_levels(spec, 400, 555_000 + seed)
        with tempfile.TemporaryDirectory() as folder:
            base = Path(folder)
            world.policy.save_pretrained(base)
            world.tokenizer.save_pretrained(base)
            for name, (loss, members) in runs.items():
                started = time.perf_counter()
                model = build_reward_model(base, world.tokenizer, members)
                config = RewardModelConfig(
                    loss, members, epochs=args.epochs, batch_size=32, learning_rate=1e-4, seed=seed
                )
                trained = train_reward_model(
                    model, world.tokenizer, data_for(loss, train_rows), config
                )
                row = held_out(trained.model, world.tokenizer, test_rows)
                table[name].append(row)
                print(
                    f"seed {seed} {name}: {len(train_rows)} problems, best epoch "
                    f"{trained.best_epoch}, accuracy canonical>wrong {row[0]:.3f}, "
                    f"miracle>wrong {row[1]:.3f}, canonical>miracle {row[2]:.3f}, "
                    f"RewardMATH Acc {row[3]:.3f} MRR {row[4]:.3f} "
                    f"({time.perf_counter() - started:.0f} s)",
                    flush=True,
                )
                del model, trained
        del world
    print(
        f"\nheld-out pairwise accuracy, 400 problems per seed, seeds {args.seeds} (mean; per seed)"
    )
    print(
        "| loss | canonical ≻ wrong | miracle ≻ wrong | canonical ≻ miracle "
        "| RewardMATH Acc (1 vs 3) | RewardMATH MRR |"
    )
    print("|---|---|---|---|---|---|")
    for name, rows in table.items():
        cells = []
        for k in range(5):
            values = [r[k] for r in rows]
            cells.append(f"{np.mean(values):.3f} ({' / '.join(f'{v:.3f}' for v in values)})")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
