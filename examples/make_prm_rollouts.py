"""Write the bundled example: LLM rollouts with PRM step scores, in densereward's JSONL format.

Each prompt has a group of responses; each response is a few reasoning steps with token spans,
a PRM score per step (the estimated probability that the solution is still correct after the
step) and a 0/1 outcome. Some responses pad themselves with repeated "correct-looking" steps, the
pattern that lets a policy farm raw PRM reward. Deterministic: ``python examples/make_prm_rollouts.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

PROMPTS, RESPONSES = 48, 4


def main(path: Path = Path(__file__).parent / "data" / "prm_rollouts.jsonl") -> None:
    rng = np.random.default_rng(0)
    lines = []
    for prompt in range(PROMPTS):
        difficulty = rng.uniform(0.2, 0.8)
        for _ in range(RESPONSES):
            steps = int(rng.integers(2, 7))
            first_error = int(rng.integers(0, steps)) if rng.random() < difficulty else steps
            correct = first_error == steps
            padding = int(rng.integers(0, 5)) if rng.random() < 0.25 else 0
            prm = [
                float(
                    np.clip((0.85 if t < first_error else 0.25) + rng.normal(0, 0.08), 0.01, 0.99)
                )
                for t in range(steps)
            ]
            prm += [float(np.clip(0.9 + rng.normal(0, 0.03), 0.01, 0.99)) for _ in range(padding)]
            lengths = rng.integers(8, 40, size=len(prm))
            ends = np.cumsum(lengths)
            spans = [[int(e - n), int(e)] for n, e in zip(lengths, ends, strict=True)]
            lines.append(
                {
                    "steps": {"prm": [round(p, 4) for p in prm]},
                    "outcome": float(correct),
                    "group": prompt,
                    "token_spans": spans,
                }
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


if __name__ == "__main__":
    main()
