"""The Text2Reward loop on MiniGrid DoorKey-5x5 (issue 16): two rounds of four reward programs,
each checked, then trained with PPO beside the sparse baseline, on several seeds.

Not a test: it trains ``1 + accepted`` PPO runs per seed. ``python
benchmarks/text2reward_doorkey.py [--seeds 0 1 2] [--steps 61440] [--out DIR]``.

No model that writes code can run on this machine, so the replies come from a script served by
the real loopback server (``densereward judge-server --replies``' app): the kinds of program a
model writes for this task, mistakes included — a syntax error, ``log(0)``, a reward paid for a
state, potential-based shaping, one-time event bonuses. The loop's mechanics (asking, checking,
sandboxed training, feedback) are what runs; the replies do not depend on the feedback, so the
second round measures the programs, not a model's reflection.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from densereward.adapters.server import serving
from densereward.judges.chat_server import make_scripted_chat_app
from densereward.runs import RunRecipe, resolve_recipe
from densereward.runs.text2reward import Text2RewardConfig, run_text2reward
from densereward.signals.judge_client import JudgeClient

HEADER = "import numpy as np\n\n\ndef compute_reward(obs, act, next_obs, terminated, truncated):\n"


def reply(body: str, words: str) -> str:
    return f"{words}\n\n```python\n{HEADER}{body}```\n"


ROUND_1 = [
    reply(
        "    holding = next_obs[:, 3, 6, 0] == 5\n"
        "    if holding.any()\n"
        "        return 0.1 * holding\n"
        "    return np.zeros(len(obs))\n",
        "Reward holding the key.",
    ),
    reply(
        "    goal_seen = (next_obs[..., 0] == 8).any(axis=(1, 2)).astype(np.float64)\n"
        "    return 0.05 * np.log(goal_seen + 1e-3 * (act == 2))\n",
        "A log bonus for the goal in view.",
    ),
    reply(
        "    holding = (next_obs[:, 3, 6, 0] == 5).astype(np.float64)\n"
        "    goal_seen = (next_obs[..., 0] == 8).any(axis=(1, 2)).astype(np.float64)\n"
        "    return 0.05 * holding + 0.05 * goal_seen\n",
        "Pay for holding the key and for seeing the goal.",
    ),
    reply(
        "    def phi(o):\n"
        "        holding = (o[:, 3, 6, 0] == 5).astype(np.float64)\n"
        "        goal_seen = (o[..., 0] == 8).any(axis=(1, 2)).astype(np.float64)\n"
        "        return 0.3 * holding + 0.3 * goal_seen\n"
        "    return 0.99 * phi(next_obs) * (1.0 - terminated) - phi(obs)\n",
        "Potential-based shaping: progress = holding the key, then seeing the goal.",
    ),
]
ROUND_2 = [
    reply(
        "    def phi(o):\n"
        "        holding = (o[:, 3, 6, 0] == 5).astype(np.float64)\n"
        "        key_ahead = (o[:, 3, :6, 0] == 5).any(axis=1).astype(np.float64)\n"
        "        goal_seen = (o[..., 0] == 8).any(axis=(1, 2)).astype(np.float64)\n"
        "        return 0.1 * key_ahead * (1 - holding) + 0.3 * holding + 0.3 * goal_seen\n"
        "    return 0.99 * phi(next_obs) * (1.0 - terminated) - phi(obs)\n",
        "Add a term for the key being straight ahead before it is picked up.",
    ),
    reply(
        "    def phi(o):\n"
        "        holding = (o[:, 3, 6, 0] == 5).astype(np.float64)\n"
        "        goal_seen = (o[..., 0] == 8).any(axis=(1, 2)).astype(np.float64)\n"
        "        return holding + goal_seen\n"
        "    return 0.99 * phi(next_obs) * (1.0 - terminated) - phi(obs)\n",
        "The same potential, three times stronger.",
    ),
    reply(
        "    picked = (next_obs[:, 3, 6, 0] == 5) & (obs[:, 3, 6, 0] != 5)\n"
        "    opened = (act == 5) & (obs[:, 3, 5, 0] == 4) & (next_obs[:, 3, 5, 2] == 0)\n"
        "    return 0.2 * picked + 0.2 * opened\n",
        "One-time bonuses for picking up the key and for opening the door.",
    ),
    reply(
        "    goal_seen = (next_obs[..., 0] == 8).any(axis=(1, 2))\n"
        "    return 0.2 * goal_seen * (act == 2) - 0.01\n",
        "Pay for moving forward while the goal is in view, with a step cost.",
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    recipe = RunRecipe.from_yaml(resolve_recipe("doorkey"))
    if args.steps is not None:
        recipe = recipe.with_length(args.steps)
    root = args.out or Path(tempfile.mkdtemp(prefix="text2reward-"))
    rows: dict[str, list[dict]] = {}
    start = time.perf_counter()
    for seed in args.seeds:
        config = Text2RewardConfig(rounds=2, candidates=4, seed=seed)
        with (
            serving(make_scripted_chat_app(ROUND_1 + ROUND_2)) as base,
            JudgeClient(f"{base}/v1", "scripted", cache=None, retries=0) as client,
        ):
            run_text2reward(recipe, client, config, root / f"seed-{seed}", say=print)
        for line in (root / f"seed-{seed}" / "candidates.jsonl").open():
            record = json.loads(line)
            key = (
                str(record["candidate"])
                if record["round"] == 0
                else (f"round {record['round']} candidate {record['candidate']}")
            )
            rows.setdefault(key, []).append(record)
    wall = time.perf_counter() - start
    base = rows["sparse"]
    base_steps = np.median([r["steps_to_threshold"] or np.inf for r in base])
    print(f"\nseeds {args.seeds}, {recipe.budget:,} PPO steps per run, {wall:.0f} s in all")
    print("| candidate | stage | final success | median steps to 90 % | vs sparse | held-out |")
    print("|---|---|---|---|---|---|")
    for key, records in rows.items():
        stage = records[0].get("stage", "baseline")
        if "final_success" not in records[0]:
            print(f"| {key} | rejected: {stage} | - | - | - | - |")
            continue
        finals = np.array([r["final_success"] for r in records])
        # null: never reached
        steps = np.array([r["steps_to_threshold"] or np.inf for r in records], dtype=float)
        median = np.median(steps) if np.isfinite(steps).sum() * 2 > len(steps) else math.inf
        ratio = (
            f"{median / base_steps:.2f}x"
            if math.isfinite(median) and math.isfinite(base_steps)
            else "-"
        )
        reached = f"{median:,.0f}" if math.isfinite(median) else "never"
        held = np.nanmean(np.array([r["held_out_success"] for r in records], dtype=float))
        print(
            f"| {key} | {stage} | {finals.mean():.2f} ± {finals.std():.2f} | {reached} "
            f"({np.isfinite(steps).sum()}/{len(steps)}) | {ratio} | {held:.2f} |"
        )
    print(f"\nfolders: {root}")


if __name__ == "__main__":
    main()
