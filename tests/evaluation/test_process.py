"""ProcessBench, RewardMATH, RewardBench and best-of-N metrics: hand cases, slow references and
the published numbers recomputed from the released scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from densereward.core.errors import ValidationError
from densereward.core.trajectories import Trajectories
from densereward.evaluation.process import (
    best_of_n_accuracy,
    best_of_n_scores,
    first_error_f1,
    one_vs_many,
    processbench_f1,
    read_predictions,
    read_processbench,
    rewardbench_pairs,
    rewardmath_scores,
)

DATA = Path(__file__).resolve().parents[1] / "data"


def test_first_error_f1_hand_case():
    # 3 erroneous items (2 found exactly), 2 correct ones (1 predicted correct)
    score = first_error_f1([2, 0, 1, -1, -1], [2, 0, 0, -1, 3])
    assert score.acc_err == pytest.approx(2 / 3) and score.acc_corr == pytest.approx(1 / 2)
    assert score.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert first_error_f1([1, -1], [0, 0]).f1 == 0.0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(-1, 4), st.integers(-1, 4)), min_size=1, max_size=30))
def test_first_error_f1_matches_a_loop(pairs):
    labels, guesses = zip(*pairs, strict=False)
    err = [g == t for t, g in pairs if t != -1]
    corr = [g == t for t, g in pairs if t == -1]
    acc_err = sum(err) / len(err) if err else 0.0
    acc_corr = sum(corr) / len(corr) if corr else 0.0
    f1 = 2 * acc_err * acc_corr / (acc_err + acc_corr) if acc_err + acc_corr else 0.0
    assert first_error_f1(labels, guesses).f1 == pytest.approx(f1)


def test_processbench_gsm8k_with_a_predictions_file(tmp_path):
    items = read_processbench(DATA / "gsm8k.json")
    assert len(items) == 400 and sum(i["label"] == -1 for i in items) == 193
    # an oracle gets F1 1; "always -1" gets acc_corr 1, acc_err 0, F1 0
    path = tmp_path / "predictions.jsonl"
    path.write_text(
        "".join(json.dumps({"id": i["id"], "prediction": i["label"]}) + "\n" for i in items)
    )
    assert processbench_f1(items, read_predictions(path)).f1 == 1.0
    never = processbench_f1(items, {i["id"]: -1 for i in items})
    assert (never.acc_err, never.acc_corr, never.f1) == (0.0, 1.0, 0.0)


def test_bad_predictions_are_named_by_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "prediction": 1}\n{"id": "b", "prediction": "x"}\n')
    with pytest.raises(ValidationError, match=r"p.jsonl:2: field .prediction."):
        read_predictions(path)
    with pytest.raises(ValidationError, match="no prediction for id 'gsm8k-0'"):
        processbench_f1(read_processbench(DATA / "gsm8k.json"), {"a": 1})


def test_processbench_items_keep_their_other_fields_and_extra_predictions_are_ignored(tmp_path):
    path = tmp_path / "subset.jsonl"
    items = [
        {"id": "a", "steps": ["s0", "s1"], "label": 1, "generator": "m"},
        {"id": "b", "steps": ["s0"], "label": -1},
    ]
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    assert read_processbench(path) == items
    # "c" belongs to another subset: one predictions file serves them all
    score = processbench_f1(items, {"a": 1, "b": 0, "c": 4})
    assert (score.acc_err, score.acc_corr, score.n_err, score.n_corr) == (1.0, 0.0, 1, 1)
    with pytest.raises(ValidationError, match="2 for id 'a' is past the last of its 2 steps"):
        processbench_f1(items, {"a": 2, "b": -1})
    with pytest.raises(ValidationError, match=r"subset.jsonl: field 'label': no erroneous items"):
        processbench_f1(items[1:], {"b": -1}, data_source=str(path))


def test_rewardmath_aggregates_step_scores_and_takes_numbers_as_one_step(tmp_path):
    path = tmp_path / "prm.jsonl"
    # problem 1: min(0.9, 0.8) = 0.8 beats 0.5 and 0.7; problem 2: 0.4 loses to 0.6 (rank 2)
    path.write_text(
        json.dumps({"score": [[0.9, 0.8], 0.5, [0.7]]})
        + "\n"
        + json.dumps({"score": [[0.4, 0.9], [0.6, 0.6], 0.1]})
        + "\n"
    )
    score = rewardmath_scores(path, "min")
    assert (score.accuracy, score.mrr, score.n) == (0.5, 0.75, 2)
    with pytest.raises(ValidationError, match="'chosen_index': 3 is not one of the 3 solutions"):
        rewardmath_scores(path, "min", chosen_index=3)


def test_rewardbench_needs_one_chosen_and_one_rejected_per_problem(tmp_path):
    def entry(problem, kind, *scores):
        return {"problem_id": problem, "solution_type": kind, "output": {"step_scores": scores}}

    path = tmp_path / "pairs.json"
    entries = [entry(0, "rejected", 0.2), entry("0", "chosen", 0.5, 0.9), entry(1, "chosen", 0.3)]
    path.write_text(json.dumps(entries[:2]))
    assert rewardbench_pairs(path, "min") == (1.0, 1)
    path.write_text(json.dumps(entries))
    with pytest.raises(ValidationError, match=r"'\[2\].solution_type': problem_id '1' has a"):
        rewardbench_pairs(path)


def test_best_of_n_scores_checks_its_columns():
    batch = Trajectories.from_episodes(
        {"prm": [[0.9, 0.2], [0.5], [0.8], [0.1, 0.3]]},
        {"outcome": [0.0, 1.0, 1.0, 0.0], "group": [0, 0, 1, 1]},
    )
    # group 0 picks response 1 (min 0.5 > 0.2), group 1 response 2
    assert best_of_n_scores(batch, "prm", "outcome", "min") == (1.0, 0.5)
    # by max, group 0 picks response 0 (0.9 > 0.5), which is wrong
    assert best_of_n_scores(batch, "prm", "outcome", "max") == (0.5, 0.5)
    graded = batch.with_episodes(outcome=torch.tensor([0.0, 0.5, 1.0, 0.0]))
    with pytest.raises(ValidationError, match="trajectory 1: field 'outcome': must be 0 or 1"):
        best_of_n_scores(graded)
    negative = batch.with_steps(prm=torch.tensor([-0.9, 0.2, 0.5, 0.8, 0.1, 0.3]))
    with pytest.raises(ValidationError, match="the product of the step scores is NaN"):
        best_of_n_scores(negative, aggregate="product")


@pytest.mark.parametrize(
    ("model", "accuracy", "mrr"), [("internlm2", 37.27, 55.17), ("ArmoRM", 20.50, 42.18)]
)
def test_rewardmath_reproduces_published_numbers(model, accuracy, mrr):
    score = rewardmath_scores(DATA / f"rewardmath_{model}_reward.json")
    assert score.n == 483
    assert round(100 * score.accuracy, 2) == accuracy
    assert round(100 * score.mrr, 2) == mrr


@pytest.mark.parametrize(("aggregate", "accuracy"), [("product", 94.4), ("last", 65.8)])
def test_rewardbench_math_prm_step_aggregation(aggregate, accuracy):
    result, pairs = rewardbench_pairs(
        DATA / "rewardbench_mathprm_steps_mathshepherd_scores.json", aggregate
    )
    assert pairs == 447
    assert round(100 * result, 1) == accuracy


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3), min_size=3, max_size=3), min_size=1, max_size=20))
def test_one_vs_many_matches_a_loop(rows):
    scores = torch.tensor(rows, dtype=torch.float64)
    chosen, rejected = scores[:, 0], scores[:, 1:]
    hits, reciprocal = 0, 0.0
    for row in rows:
        hits += all(row[0] > r for r in row[1:])
        reciprocal += 1 / (1 + sum(r >= row[0] for r in row[1:]))
    result = one_vs_many(chosen, rejected)
    assert result.accuracy == pytest.approx(hits / len(rows))
    assert result.mrr == pytest.approx(reciprocal / len(rows))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 2), st.booleans()), min_size=1, max_size=25
    )
)
def test_best_of_n_matches_a_loop(rows):
    scores = torch.tensor([float(r[0]) for r in rows])
    group = torch.tensor([r[1] for r in rows])
    correct = torch.tensor([r[2] for r in rows])
    picks = {}
    for index, (score, g, _ok) in enumerate(rows):
        if g not in picks or score > rows[picks[g]][0]:
            picks[g] = index
    expected = sum(rows[i][2] for i in picks.values()) / len(picks)
    assert best_of_n_accuracy(scores, correct, group) == pytest.approx(expected)
