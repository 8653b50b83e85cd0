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

Each file is checked once, on reading, against the pydantic model of its format
(:class:`ProcessBenchItem`, :class:`Prediction`, :class:`RewardMathEntry`,
:class:`RewardBenchEntry`; see :mod:`densereward.evaluation.records`): strict types, finite
scores, unique ids, one chosen and one rejected solution per RewardBench problem. The first
problem raises a one-line ``ValidationError`` naming the file, the line and the field.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import (
    BeforeValidator,
    Field,
    FiniteFloat,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
)

from densereward.core.errors import ValidationError
from densereward.core.segments import Groups, Segments, aggregate_segments
from densereward.core.trajectories import Trajectories
from densereward.evaluation.records import (
    Identifier,
    RecordsFile,
    StrictRecord,
    check_unique,
    read_records,
    show,
)


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


# --------------------------------------------------------------------------- records
# The models of each file format. Validation is strict (see ``StrictRecord``); each check that
# spans records (an id given twice, a problem with 9 solutions after one with 10) keeps what it
# has seen in the validation context that ``RecordsFile.validate`` shares across the file.


class ProcessBenchItem(StrictRecord):
    """A ProcessBench item: a solution's steps and ``label``, its earliest wrong step (-1: none)."""

    id: Identifier
    """Unique within the file."""
    steps: list[StrictStr] = Field(min_length=1)
    label: StrictInt = Field(ge=-1)
    """-1, or the index of a step."""

    @field_validator("id")
    @classmethod
    def _id_is_unique(cls, value: str, info: ValidationInfo) -> str:
        check_unique(value, info)
        return value

    @field_validator("label")
    @classmethod
    def _label_names_a_step(cls, value: int, info: ValidationInfo) -> int:
        steps = info.data.get("steps")
        if steps is not None and value >= len(steps):
            raise ValueError(f"{value} is past the last of {len(steps)} steps")
        return value


class Prediction(StrictRecord):
    """A ProcessBench prediction: ``{"id": ..., "prediction": earliest wrong step or -1}``."""

    id: Identifier
    """Unique within the file."""
    prediction: StrictInt = Field(ge=-1)

    @field_validator("id")
    @classmethod
    def _id_is_unique(cls, value: str, info: ValidationInfo) -> str:
        check_unique(value, info)
        return value


def _as_steps(value: Any) -> Any:
    """A solution's score: a number is the score of a one-step solution."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"should be a finite number, got {show(value)}")
        return [value]
    if not isinstance(value, list):
        raise ValueError(f"should be a number or a non-empty list of numbers, got {show(value)}")
    return value


StepScores = Annotated[list[FiniteFloat], BeforeValidator(_as_steps), Field(min_length=1)]
"""A solution's step scores (a non-empty list of finite numbers), or one number."""


class RewardMathEntry(StrictRecord):
    """A RewardMATH problem: one score per solution, the correct one first (by default)."""

    solution_reference: list[StrictStr] | None = None
    """Who wrote each solution; when given, one per score."""
    score: list[StepScores] = Field(min_length=2)
    """Per solution, its score or its step scores; every problem has as many solutions."""

    @field_validator("score")
    @classmethod
    def _one_score_per_solution(cls, value: list[list[float]], info: ValidationInfo) -> Any:
        names = info.data.get("solution_reference")
        if names is not None and len(names) != len(value):
            raise ValueError(f"has {len(value)} solutions, solution_reference names {len(names)}")
        if info.context is not None:
            width, where = info.context.setdefault("width", (len(value), info.context["where"]))
            if len(value) != width:
                raise ValueError(f"has {len(value)} solutions, {where} has {width}")
        return value


class RewardBenchOutput(StrictRecord):
    step_scores: StepScores


class RewardBenchEntry(StrictRecord):
    """One solution of a RewardBench pair: ``{"problem_id", "solution_type", "output"}``."""

    problem_id: Identifier
    solution_type: Literal["chosen", "rejected"]
    """One of each per ``problem_id``."""
    output: RewardBenchOutput

    @field_validator("solution_type")
    @classmethod
    def _one_of_each(cls, value: str, info: ValidationInfo) -> str:
        problem = info.data.get("problem_id")
        if problem is not None:
            check_unique((problem, value), info, f"{value!r} for problem_id {problem!r}")
        return value


def read_processbench(path: str | Path) -> list[dict[str, Any]]:
    """ProcessBench items (a JSON array or JSON lines) checked against :class:`ProcessBenchItem`;
    returned as read, fields the model does not name included."""
    records = read_records(path)
    records.validate(ProcessBenchItem)
    return [record.value for record in records.records]


def read_predictions(path: str | Path) -> dict[str, int]:
    """Predictions file: JSON lines (or a JSON array) of :class:`Prediction`, by id (as text)."""
    return {p.id: p.prediction for p in read_records(path).validate(Prediction)}


def processbench_f1(
    items: Sequence[dict[str, Any]],
    predictions: dict[str, int],
    source: str = "predictions",
    data_source: str | None = None,
) -> FirstErrorScore:
    """Score ``predictions`` (by id) on ProcessBench ``items`` (from :func:`read_processbench`).

    Every item needs a prediction, one that names one of its steps (or -1); predictions for ids
    not among ``items`` are ignored, so one file can hold the predictions of every subset. The
    subset needs erroneous and correct items both: F1 is undefined without either.
    """
    labels, guesses = [], []
    for item in items:
        key = str(item["id"])
        if key not in predictions:
            of = f" of {data_source}" if data_source is not None else ""
            raise ValidationError("prediction", f"no prediction for id {key!r}{of}", source=source)
        guess, steps = predictions[key], len(item["steps"])
        if guess >= steps:
            raise ValidationError(
                "prediction",
                f"{guess} for id {key!r} is past the last of its {steps} steps",
                source=source,
            )
        labels.append(int(item["label"]))
        guesses.append(guess)
    score = first_error_f1(labels, guesses)
    if score.n_err == 0 or score.n_corr == 0:
        missing = "erroneous items (label ≥ 0)" if score.n_err == 0 else "correct items (label -1)"
        raise ValidationError(
            "label", f"no {missing}: F1 needs both", source=data_source or "items"
        )
    return score


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
    records: RecordsFile, steps: Sequence[list[float]], owners: Sequence[int], aggregate: str
) -> torch.Tensor:
    """One score per solution from its step scores (``aggregate``, vectorized over all of them);
    ``owners[i]``: the record of solution ``i``, named if its score comes out non-finite (the
    log in ``product`` of a negative score, a ``sum`` that overflows)."""
    lengths = np.fromiter(map(len, steps), dtype=np.int64, count=len(steps))
    values = torch.tensor(list(itertools.chain.from_iterable(steps)), dtype=torch.float64)
    if bool((lengths == 1).all()):
        return values  # a one-step score is the solution's score under every aggregation
    offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)]))
    solution = aggregate_segments(values, Segments(offsets), aggregate)
    bad = ~torch.isfinite(solution)
    if bool(bad.any()):
        first = int(torch.nonzero(bad)[0, 0])
        raise records.error(
            records.records[owners[first]],
            f"the {aggregate} of a solution's step scores is {show(float(solution[first]))}"
            + (" (product needs scores in [0, 1])" if aggregate == "product" else ""),
        )
    return solution


def rewardmath_scores(
    path: str | Path, aggregate: str = "min", chosen_index: int = 0
) -> RankingScore:
    """RewardMATH Acc/MRR from a released per-solution score file.

    Each entry is a :class:`RewardMathEntry`, ``{"problem", "solution_reference", "score": [...]}``
    with the correct solution at ``chosen_index`` (the release puts the human/GPT-4 solution
    first); a PRM's entries hold lists of step scores, aggregated by ``aggregate``.
    """
    records = read_records(path)
    entries = records.validate(RewardMathEntry)
    width = len(entries[0].score)
    if not 0 <= chosen_index < width:
        raise ValidationError(
            "chosen_index", f"{chosen_index} is not one of the {width} solutions", source=str(path)
        )
    steps = [solution for entry in entries for solution in entry.score]
    owners = np.repeat(np.arange(len(entries)), width).tolist()
    flat = _solution_scores(records, steps, owners, aggregate).view(-1, width)
    chosen = flat[:, chosen_index]
    rejected = torch.cat([flat[:, :chosen_index], flat[:, chosen_index + 1 :]], dim=1)
    return one_vs_many(chosen, rejected)


def rewardbench_pairs(path: str | Path, aggregate: str = "product") -> tuple[float, int]:
    """RewardBench pairwise accuracy from per-step scores of chosen/rejected solutions.

    Entries are :class:`RewardBenchEntry`, ``{"problem_id", "solution_type": "chosen"|"rejected",
    "output": {"step_scores"}}``, one chosen and one rejected per problem. Returns (accuracy,
    number of pairs).
    """
    records = read_records(path)
    entries = records.validate(RewardBenchEntry)
    pairs: dict[str, dict[str, int]] = {}
    for index, entry in enumerate(entries):
        pairs.setdefault(entry.problem_id, {})[entry.solution_type] = index
    for indices in pairs.values():
        if len(indices) == 1:
            ((kind, index),) = indices.items()
            other = "rejected" if kind == "chosen" else "chosen"
            raise records.error(
                records.records[index],
                f"problem_id {entries[index].problem_id!r} has a {kind} solution but no {other}",
                ("solution_type",),
            )
    steps = [entry.output.step_scores for entry in entries]
    solution = _solution_scores(records, steps, range(len(entries)), aggregate)
    order = torch.tensor([[p["chosen"], p["rejected"]] for p in pairs.values()])
    paired = solution[order]
    return pairwise_accuracy(paired[:, 0], paired[:, 1]), len(pairs)


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


def best_of_n_scores(
    batch: Trajectories, score: str = "prm", correct: str = "outcome", aggregate: str = "min"
) -> tuple[float, float]:
    """Best-of-N on a batch of responses: ``(accuracy of the pick, mean accuracy)``.

    ``score`` is a step column (one number per step) aggregated per response by ``aggregate``;
    ``correct`` a per-trajectory column of 0/1; responses compete within their ``group`` (all in
    one group if the batch has none).
    """
    steps = batch.step(score)
    if steps.ndim != 1:
        raise ValidationError(
            f"steps.{score}", f"must hold one number per step, got {list(steps.shape[1:])} each"
        )
    truth = batch.episode(correct)
    if truth.ndim != 1:
        raise ValidationError(
            correct, f"must hold one 0/1 per trajectory, got {list(truth.shape[1:])}"
        )
    truth = truth.double()
    wrong = (truth != 0) & (truth != 1)
    if bool(wrong.any()):
        first = int(torch.nonzero(wrong)[0, 0])
        raise ValidationError(
            correct, f"must be 0 or 1 (correct or not), got {float(truth[first])}", trajectory=first
        )
    solution = aggregate_segments(steps.double(), batch.segments, aggregate)
    bad = ~torch.isfinite(solution)
    if bool(bad.any()):
        first = int(torch.nonzero(bad)[0, 0])
        raise ValidationError(
            f"steps.{score}",
            f"the {aggregate} of the step scores is {show(float(solution[first]))}"
            + (" (product needs scores in [0, 1])" if aggregate == "product" else ""),
            trajectory=first,
        )
    group = (
        batch.episode("group")
        if "group" in batch.episodes
        else torch.zeros(len(batch), dtype=torch.long)
    )
    return best_of_n_accuracy(solution, truth, group), float(truth.mean())
