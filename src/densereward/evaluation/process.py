"""Judging process and outcome reward models: ProcessBench, RewardMATH, RewardBench, best-of-N.

- **ProcessBench** (Zheng et al. 2024): predict the index of the earliest wrong step (-1 if none).
  ``acc_err`` = exact-match accuracy on erroneous items, ``acc_corr`` on correct ones,
  ``F1 = 2·acc_err·acc_corr / (acc_err + acc_corr)``; the headline is the mean F1 over subsets.
- **RewardMATH** (Kim et al. 2024): per problem one correct and several wrong solutions;
  ``Acc = mean[score(chosen) > max score(rejected)]`` (ties are wrong) and the mean reciprocal
  rank of the correct solution with ties ranked against it (``rank = 1 + #{rejected ≥ chosen}``).
- **RewardBench** (v1) pairwise accuracy: ``mean[score(chosen) > score(rejected)]``, ties wrong.
- **Best-of-N**: the accuracy of the highest-scored response per group.

Step-level scores become solution scores by ``aggregate_segments`` (min, product, last, mean).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densereward.core.errors import ValidationError
from densereward.core.segments import Groups, Segments, aggregate_segments
from densereward.io.jsonl import iter_json_lines


@dataclass(frozen=True)
class FirstErrorScore:
    acc_err: float
    acc_corr: float
    f1: float
    n_err: int
    n_corr: int


def first_error_f1(labels: Sequence[int], predictions: Sequence[int]) -> FirstErrorScore:
    """ProcessBench's metric on one subset. ``labels`` and ``predictions``: earliest wrong step,
    -1 for none.

    >>> first_error_f1([-1, -1, 2, 0], [-1, 1, 2, 1])
    FirstErrorScore(acc_err=0.5, acc_corr=0.5, f1=0.5, n_err=2, n_corr=2)
    """
    truth = np.asarray(labels, dtype=np.int64)
    guess = np.asarray(predictions, dtype=np.int64)
    if truth.shape != guess.shape:
        raise ValidationError("predictions", f"has {guess.size} entries for {truth.size} labels")
    hit = truth == guess
    erroneous = truth != -1
    n_err, n_corr = int(erroneous.sum()), int((~erroneous).sum())
    acc_err = float(hit[erroneous].mean()) if n_err else 0.0
    acc_corr = float(hit[~erroneous].mean()) if n_corr else 0.0
    total = acc_err + acc_corr
    f1 = 2 * acc_err * acc_corr / total if total > 0 else 0.0
    return FirstErrorScore(acc_err, acc_corr, f1, n_err, n_corr)


def _load_json_or_lines(path: Path) -> list[dict[str, Any]]:
    """A JSON list of objects (ProcessBench, RewardMATH releases), or JSON lines read by the
    project's line reader (errors name the line)."""
    try:
        head = path.read_text(encoding="utf-8").lstrip()[:1]
    except UnicodeDecodeError:
        raise ValidationError(
            "file", "is not UTF-8 text (binary file?)", source=str(path)
        ) from None
    if head != "[":
        return [record for _, record in iter_json_lines(path)]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValidationError(
            "file", f"malformed JSON ({error.msg} at line {error.lineno})", source=str(path)
        ) from None
    return data


def read_processbench(path: str | Path) -> list[dict[str, Any]]:
    """ProcessBench items (JSON list or JSON lines), each checked for ``id``, ``steps``, ``label``."""
    path = Path(path)
    items = _load_json_or_lines(path)
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise ValidationError("item", "must be an object", line=number, source=str(path))
        for key in ("id", "steps", "label"):
            if key not in item:
                raise ValidationError(key, "is missing", line=number, source=str(path))
        if not isinstance(item["label"], int) or item["label"] < -1:
            raise ValidationError("label", "must be an integer ≥ -1", line=number, source=str(path))
        if item["label"] >= len(item["steps"]):
            raise ValidationError(
                "label",
                f"{item['label']} is past the last of {len(item['steps'])} steps",
                line=number,
                source=str(path),
            )
    return items


def read_predictions(path: str | Path) -> dict[str, int]:
    """Predictions file: JSON lines (or a JSON list) of ``{"id": ..., "prediction": int}``."""
    path = Path(path)
    out: dict[str, int] = {}
    for number, item in enumerate(_load_json_or_lines(path), start=1):
        if not isinstance(item, dict) or "id" not in item or "prediction" not in item:
            raise ValidationError(
                "prediction",
                "each entry needs 'id' and 'prediction'",
                line=number,
                source=str(path),
            )
        value = item["prediction"]
        if isinstance(value, bool) or not isinstance(value, int) or value < -1:
            raise ValidationError(
                "prediction",
                f"must be an integer ≥ -1, got {value!r}",
                line=number,
                source=str(path),
            )
        out[str(item["id"])] = value
    return out


def processbench_f1(
    items: Sequence[dict[str, Any]], predictions: dict[str, int], source: str = "predictions"
) -> FirstErrorScore:
    """Score ``predictions`` (by id) on ProcessBench ``items``; every item needs a prediction."""
    labels, guesses = [], []
    for item in items:
        key = str(item["id"])
        if key not in predictions:
            raise ValidationError("prediction", f"no prediction for id {key!r}", source=source)
        labels.append(int(item["label"]))
        guesses.append(predictions[key])
    return first_error_f1(labels, guesses)


# --------------------------------------------------------------------------- one-vs-many
@dataclass(frozen=True)
class RankingScore:
    accuracy: float
    mrr: float
    n: int


def one_vs_many(chosen: torch.Tensor, rejected: torch.Tensor) -> RankingScore:
    """RewardMATH's Acc and MRR: ``chosen`` ``[P]``, ``rejected`` ``[P, K]``; ties count against.

    >>> one_vs_many(torch.tensor([1.0, 0.5]), torch.tensor([[0.0, 0.2], [0.5, 0.9]]))
    RankingScore(accuracy=0.5, mrr=0.6666666666666666, n=2)
    """
    beaten = rejected >= chosen[:, None]
    accuracy = float((~beaten.any(dim=1)).double().mean())
    rank = 1 + beaten.sum(dim=1).double()
    return RankingScore(accuracy, float((1.0 / rank).mean()), len(chosen))


def pairwise_accuracy(chosen: torch.Tensor, rejected: torch.Tensor) -> float:
    """RewardBench's accuracy: ``mean[chosen > rejected]``, ties wrong."""
    return float((chosen > rejected).double().mean())


def _solution_scores(
    scores: Sequence[Any], aggregate: str, source: str, field: str = "score"
) -> torch.Tensor:
    """Scalars pass through; lists of step scores are aggregated (vectorized over all of them)."""
    if all(isinstance(s, int | float) and not isinstance(s, bool) for s in scores):
        return torch.tensor(scores, dtype=torch.float64)
    lengths, flat = [], []
    for index, s in enumerate(scores):
        steps = s if isinstance(s, list) else [s]
        if not steps or not all(isinstance(v, int | float) for v in steps):
            raise ValidationError(
                field,
                "must be a number or a non-empty list of numbers",
                trajectory=index,
                source=source,
            )
        lengths.append(len(steps))
        flat.extend(steps)
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.long)
    values = torch.tensor(flat, dtype=torch.float64)
    return aggregate_segments(values, Segments(offsets), aggregate)


def rewardmath_scores(
    path: str | Path, aggregate: str = "min", chosen_index: int = 0
) -> RankingScore:
    """RewardMATH Acc/MRR from a released per-solution score file.

    Each entry is ``{"problem", "solution_reference", "score": [...]}`` with the correct solution
    at ``chosen_index`` (the release puts the human/GPT-4 solution first); a PRM's entries hold
    lists of step scores, aggregated by ``aggregate``.
    """
    path = Path(path)
    entries = _load_json_or_lines(path)
    width = None
    rows = []
    for number, entry in enumerate(entries, start=1):
        scores = entry.get("score") if isinstance(entry, dict) else None
        if not isinstance(scores, list) or len(scores) < 2:
            raise ValidationError(
                "score", "must list at least two solutions' scores", line=number, source=str(path)
            )
        if width is not None and len(scores) != width:
            raise ValidationError(
                "score",
                f"has {len(scores)} solutions, expected {width}",
                line=number,
                source=str(path),
            )
        width = len(scores)
        rows.extend(scores)
    assert width is not None
    flat = _solution_scores(rows, aggregate, str(path)).view(-1, width)
    chosen = flat[:, chosen_index]
    rejected = torch.cat([flat[:, :chosen_index], flat[:, chosen_index + 1 :]], dim=1)
    return one_vs_many(chosen, rejected)


def rewardbench_pairs(path: str | Path, aggregate: str = "product") -> tuple[float, int]:
    """RewardBench pairwise accuracy from per-step scores of chosen/rejected solutions.

    Entries: ``{"problem_id", "solution_type": "chosen"|"rejected", "output": {"step_scores"}}``.
    Returns (accuracy, number of pairs).
    """
    path = Path(path)
    entries = _load_json_or_lines(path)
    keys, kinds, scores = [], [], []
    for number, entry in enumerate(entries, start=1):
        try:
            keys.append(entry["problem_id"])
            kinds.append(entry["solution_type"])
            scores.append(entry["output"]["step_scores"])
        except (KeyError, TypeError):
            raise ValidationError(
                "entry",
                "needs problem_id, solution_type, output.step_scores",
                line=number,
                source=str(path),
            ) from None
        if kinds[-1] not in ("chosen", "rejected"):
            raise ValidationError(
                "solution_type",
                f"must be chosen or rejected, got {kinds[-1]!r}",
                line=number,
                source=str(path),
            )
    solution = _solution_scores(scores, aggregate, str(path), "output.step_scores")
    pairs: dict[Any, dict[str, float]] = {}
    for key, kind, value in zip(keys, kinds, solution.tolist(), strict=False):
        pairs.setdefault(key, {})[kind] = value
    complete = [p for p in pairs.values() if len(p) == 2]
    if not complete:
        raise ValidationError(
            "entry", "no problem has both a chosen and a rejected solution", source=str(path)
        )
    chosen = torch.tensor([p["chosen"] for p in complete])
    rejected = torch.tensor([p["rejected"] for p in complete])
    return pairwise_accuracy(chosen, rejected), len(complete)


def best_of_n_accuracy(scores: torch.Tensor, correct: torch.Tensor, group: torch.Tensor) -> float:
    """Accuracy when each group (prompt) keeps its highest-scored response (first on ties).

    >>> best_of_n_accuracy(torch.tensor([0.1, 0.9, 0.5, 0.4]), torch.tensor([0, 1, 0, 1]),
    ...                    torch.tensor([0, 0, 1, 1]))
    0.5
    """
    groups = Groups.from_labels(group)
    best = groups.max(scores.double())[groups.index]
    is_best = scores.double() == best
    # the first maximum in each group: earliest index among the tied
    order = torch.arange(len(scores), dtype=torch.float64)
    first = torch.full((groups.count,), float(len(scores)), dtype=torch.float64)
    first = first.scatter_reduce(
        0, groups.index, torch.where(is_best, order, first[groups.index]), "amin"
    )
    return float(correct.double()[first.long()].mean())
