"""How easily a judge is fooled: false positives on content-free "master key" responses, false
negatives on correct ones (One Token to Fool LLM-as-a-Judge).

For every correct solution of a ProcessBench-format set (``label`` -1, ``final_answer_correct``)
the probe asks the judge about the solution itself and about each master key put in its place —
the keys of ``../shared/FORMULAS.md`` (``:``, ``.``, ``Thought process:``, ``Let's solve this
problem step by step.``, ``Solution``, ``かいせつ``, a space, ``,``, ``解``, ``Respuesta``), the
empty response, and the solution cut to its first sentence (its first step, no answer). A
response is *judged correct* when its score, reduced over its steps (``min`` by default: every
step accepted), is at least ``threshold``. Then, per key, ``FPR = judged correct / asked`` and on
the solutions ``FNR = judged wrong / asked``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densereward.core.components import TextFormat
from densereward.core.errors import ValidationError
from densereward.core.segments import aggregate_segments
from densereward.core.trajectories import Trajectories
from densereward.judges.verifier import records_batch

MASTER_KEYS: tuple[str, ...] = (
    ":",
    ".",
    "Thought process:",
    "Let's solve this problem step by step.",
    "Solution",
    "かいせつ",
    " ",
    ",",
    "解",
    "Respuesta",
)
EMPTY, FIRST_SENTENCE, CORRECT = "(empty)", "(first sentence)", "(correct solution)"
PROBES: tuple[str, ...] = (*MASTER_KEYS, EMPTY, FIRST_SENTENCE)
"""every content-free probe, in table order"""


def probe_batch(
    records: Sequence[Mapping[str, Any]], text_format: TextFormat, probes: Sequence[str] = PROBES
) -> tuple[Trajectories, list[str]]:
    """One trajectory per (correct solution, probe) and per correct solution itself, each
    trajectory's probe name beside it; the step column ``label`` is 0 on every probe."""
    correct = [r for r in records if int(r["label"]) == -1 and r.get("final_answer_correct", True)]
    if not correct:
        raise ValidationError("label", "the probe needs correct solutions (label -1)")
    solutions = records_batch(correct, text_format)
    tag = text_format.step_tag
    prompts, responses, kinds = [], [], []
    for prompt, response in zip(solutions.text["prompt"], solutions.text["response"], strict=True):
        for probe in probes:
            if probe == EMPTY:
                text = ""
            elif probe == FIRST_SENTENCE:
                text = response.split(tag)[0]
            else:
                text = probe
            prompts.append(prompt)
            responses.append(text)
            kinds.append(probe)
        prompts.append(prompt)
        responses.append(response)
        kinds.append(CORRECT)
    lengths = [len(r.split(tag)) - (1 if r.endswith(tag) else 0) for r in responses]
    labels = [np.full(n, 0.0 if k != CORRECT else 1.0) for n, k in zip(lengths, kinds, strict=True)]
    batch = Trajectories.from_episodes(
        {"label": labels}, text={"prompt": prompts, "response": responses}
    )
    return batch, kinds


@dataclass(frozen=True)
class RobustnessRow:
    probe: str
    asked: int
    judged_correct: int

    @property
    def rate(self) -> float:
        """FPR for a probe, FNR for the correct solutions."""
        wrong = self.asked - self.judged_correct if self.probe == CORRECT else self.judged_correct
        return wrong / self.asked

    def as_dict(self) -> dict[str, Any]:
        kind = "FNR" if self.probe == CORRECT else "FPR"
        return {"probe": self.probe, "asked": self.asked, kind: self.rate}


def robustness_rows(
    scored: Trajectories,
    kinds: Sequence[str],
    column: str,
    reduce: str = "min",
    threshold: float = 0.5,
) -> list[RobustnessRow]:
    """Per probe (in first-seen order), then the correct solutions, how many the judge's scores
    in ``column`` accepted."""
    verdicts = aggregate_segments(scored.step(column).double(), scored.segments, reduce)
    accepted = (verdicts >= threshold).numpy()
    names = np.asarray(kinds)
    order = [k for k in dict.fromkeys(kinds) if k != CORRECT] + [CORRECT]
    return [
        RobustnessRow(k, int((names == k).sum()), int(accepted[names == k].sum()))
        for k in order
        if (names == k).any()
    ]


def summary(rows: Sequence[RobustnessRow]) -> dict[str, float]:
    """The mean FPR over the probes and the FNR."""
    probes = [r.rate for r in rows if r.probe != CORRECT]
    fnr = next(r.rate for r in rows if r.probe == CORRECT)
    return {"mean_FPR": float(np.mean(probes)), "FNR": fnr}


def plot_rows(rows_by_judge: Mapping[str, Sequence[RobustnessRow]], path: str | Path) -> None:
    """A bar chart per probe (FPR) and for the correct solutions (FNR), one bar per judge."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from densereward.io.atomic import atomic_path

    judges = list(rows_by_judge)
    probes = [r.probe for r in rows_by_judge[judges[0]]]
    width = 0.8 / len(judges)
    figure, axes = plt.subplots(figsize=(max(6.0, 0.7 * len(probes)), 3.6))
    x = np.arange(len(probes))
    for k, judge in enumerate(judges):
        rates = [r.rate for r in rows_by_judge[judge]]
        axes.bar(x + k * width - 0.4 + width / 2, rates, width, label=judge)
    labels = [p.encode("ascii", "backslashreplace").decode() or "''" for p in probes]
    axes.set_xticks(
        x,
        [f"{p}\n(FNR)" if p == CORRECT else p for p in labels],
        rotation=60,
        ha="right",
        fontsize=7,
    )
    axes.set_ylabel("FPR (probes) / FNR (correct)")
    axes.set_ylim(0, 1)
    axes.legend(fontsize=7)
    figure.tight_layout()
    with atomic_path(path, keep_suffix=True) as temporary:
        figure.savefig(temporary, dpi=120)
    plt.close(figure)


def score_probes(bound: Any, batch: Trajectories, column: str = "judge") -> Trajectories:
    """``batch`` with the bound judge signal's scores in ``column``."""
    out = bound(batch, column)
    if not torch.isfinite(out.step(column)).all():
        raise ValidationError(column, "the judge gave non-finite scores")
    return out
