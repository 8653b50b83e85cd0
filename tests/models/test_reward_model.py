"""Reward models from preferences: each loss against its formula written out, training that
learns, ``densereward train-rm`` end to end (the folder loads with transformers and scores as TRL
reads it), one-line refusals of bad preference files, and the ``reward_model`` signal."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from densereward.cli import app as cli
from densereward.core.components import SignalContext
from densereward.core.registry import build
from densereward.core.trajectories import Trajectories
from densereward.models.language import build_causal_lm
from densereward.models.reward_model import (
    bradley_terry_loss,
    bradley_terry_ties_loss,
    encode_texts,
    load_reward_model,
    ordinal_loss,
    ordinal_thresholds,
    plackett_luce_loss,
    score_texts,
)
from densereward.worlds.reasoning.tokenizer import build_tokenizer

finite = st.floats(-6, 6, allow_nan=False)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


@given(finite, finite)
def test_bradley_terry_is_minus_log_sigmoid_of_the_margin(c: float, r: float) -> None:
    got = float(
        bradley_terry_loss(
            torch.tensor(c, dtype=torch.float64), torch.tensor(r, dtype=torch.float64)
        )
    )
    assert got == pytest.approx(-math.log(sigmoid(c - r)), rel=1e-9, abs=1e-12)


@given(finite, finite, st.floats(-3, 3))
def test_win_tie_loss_probabilities_sum_to_one_and_match_rao_kupper(
    c: float, r: float, eta: float
) -> None:
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    theta = math.log1p(math.exp(eta))
    win = math.exp(-float(bradley_terry_ties_loss(t(c), t(r), torch.tensor(False), t(eta))))
    loss = math.exp(-float(bradley_terry_ties_loss(t(r), t(c), torch.tensor(False), t(eta))))
    tie = math.exp(-float(bradley_terry_ties_loss(t(c), t(r), torch.tensor(True), t(eta))))
    assert win == pytest.approx(sigmoid(c - r - theta), rel=1e-9)
    assert tie == pytest.approx(sigmoid(theta - (c - r)) - sigmoid(-theta - (c - r)), abs=1e-9)
    assert win + tie + loss == pytest.approx(1.0, abs=1e-9)


@settings(max_examples=50)
@given(st.lists(st.lists(finite, min_size=1, max_size=5), min_size=1, max_size=4))
def test_plackett_luce_equals_its_sum_written_out(lists: list[list[float]]) -> None:
    width = max(len(x) for x in lists)
    scores = torch.zeros(len(lists), width, dtype=torch.float64)
    mask = torch.zeros(len(lists), width, dtype=torch.bool)
    for i, x in enumerate(lists):
        scores[i, : len(x)] = torch.tensor(x, dtype=torch.float64)
        mask[i, : len(x)] = True
    got = plackett_luce_loss(scores, mask)
    for i, x in enumerate(lists):
        want = -sum(x[k] - math.log(sum(math.exp(v) for v in x[k:])) for k in range(len(x)))
        assert float(got[i]) == pytest.approx(want, rel=1e-9, abs=1e-9)


@settings(max_examples=50)
@given(finite, st.lists(st.floats(-2, 2), min_size=1, max_size=5))
def test_ordinal_grade_probabilities_sum_to_one_and_follow_the_thresholds(
    s: float, raw: list[float]
) -> None:
    parameters = torch.tensor(raw, dtype=torch.float64)
    theta = ordinal_thresholds(parameters).tolist()
    assert all(a < b for a, b in itertools.pairwise(theta))
    levels = len(raw) + 1
    cumulative = [0.0, *(sigmoid(t - s) for t in theta), 1.0]
    total = 0.0
    for g in range(levels):
        p = math.exp(
            -float(
                ordinal_loss(torch.tensor([s], dtype=torch.float64), torch.tensor([g]), parameters)[
                    0
                ]
            )
        )
        assert p == pytest.approx(cumulative[g + 1] - cumulative[g], abs=1e-9)
        total += p
    assert total == pytest.approx(1.0, abs=1e-9)


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("base")
    tokenizer = build_tokenizer()
    build_causal_lm(tokenizer, layers=1, width=32, heads=2, seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def pairs(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Preferences a model can learn: the chosen response ends in 7, the rejected in 3."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        stem = "".join(str(d) for d in rng.integers(0, 10, 3))
        out.append({"prompt": "1+2=?", "chosen": stem + "7", "rejected": stem + "3"})
    return out


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


def train(args: list[str]) -> Any:
    return CliRunner().invoke(cli, ["train-rm", *args])


def test_train_rm_learns_and_its_folder_scores_as_trl_reads_it(base: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    data = write(tmp_path / "pairs.jsonl", pairs(160))
    out = tmp_path / "rm"
    result = train(
        [
            str(data),
            "--base",
            str(base),
            "--out",
            str(out),
            "--epochs",
            "4",
            "--learning-rate",
            "3e-3",
            "--batch-size",
            "16",
        ]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    best = metrics["history"][metrics["best_epoch"] - 1]
    assert best["validation_accuracy"] >= 0.9
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    model_ours, tokenizer = load_reward_model(out)
    texts = ["1+2=?0127", "1+2=?0123"]
    # what TRL's GRPOTrainer does with a reward model: right padding, no special tokens, [:, 0]
    inputs = tokenizer(
        text=texts,
        return_tensors="pt",
        padding=True,
        padding_side="right",
        add_special_tokens=False,
    )
    with torch.no_grad():
        trl = model(**inputs).logits[:, 0]
    torch.testing.assert_close(trl.double(), score_texts(model_ours, tokenizer, texts)[:, 0])
    assert trl[0] > trl[1]


def test_ranked_lists_ordinal_grades_and_ensembles(base: Path, tmp_path: Path) -> None:
    ranked = write(
        tmp_path / "ranked.jsonl",
        [
            {"prompt": "x", "responses": [s + "7", s + "5", s + "3"]}
            for s in ("12", "40", "98", "33", "61", "05")
        ],
    )
    out = tmp_path / "pl"
    result = train(
        [
            str(ranked),
            "--base",
            str(base),
            "--out",
            str(out),
            "--loss",
            "plackett_luce",
            "--epochs",
            "1",
            "--ensemble",
            "3",
        ]
    )
    assert result.exit_code == 0, result.output
    model, tokenizer = load_reward_model(out)
    assert model.config.num_labels == 3 and score_texts(model, tokenizer, ["x127"]).shape == (1, 3)
    graded = write(
        tmp_path / "graded.jsonl",
        [{"response": s + str(g), "grade": g} for s in ("12", "40", "98") for g in range(3)],
    )
    result = train(
        [
            str(graded),
            "--base",
            str(base),
            "--out",
            str(tmp_path / "ord"),
            "--loss",
            "ordinal",
            "--epochs",
            "1",
            "--levels",
            "3",
        ]
    )
    assert result.exit_code == 0, result.output
    head = torch.load(tmp_path / "ord" / "reward_head.pt")
    assert head["loss"] == "ordinal" and head["parameters"].shape == (2,)


@pytest.mark.parametrize(
    ("records", "extra", "message"),
    [
        ([{"prompt": "a", "chosen": "b"}], [], r"pairs\.jsonl:4: field 'rejected'"),
        ([{"chosen": "b", "rejected": "b"}], [], r"chosen equals rejected"),
        ([{"chosen": "b", "rejected": "c", "tie": True}], [], r"field 'tie'.*bt_ties"),
        ([{"chosen": "b", "rejected": "c", "tie": 1}], ["--loss", "bt_ties"], r"field 'tie'"),
        ([{"responses": ["a"]}], ["--loss", "plackett_luce"], r"field 'responses'"),
        (
            [{"response": "a", "grade": 3}],
            ["--loss", "ordinal", "--levels", "3"],
            r"field 'grade': grade 3 is out of range 0..2",
        ),
        ([{"response": "a", "grade": -1}], ["--loss", "ordinal"], r"field 'grade'"),
        (
            [{"prompt": "a", "chosen": [{"role": "user", "content": "b"}], "rejected": "c"}],
            [],
            r"all strings or all conversations",
        ),
    ],
)
def test_bad_preference_files_are_one_line_and_leave_no_folder(
    base: Path, tmp_path: Path, records: list[dict[str, Any]], extra: list[str], message: str
) -> None:
    import re

    data = write(tmp_path / "pairs.jsonl", [*pairs(3), *records] if not extra else records)
    out = tmp_path / "rm"
    result = train([str(data), "--base", str(base), "--out", str(out), *extra])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and re.search(message, result.output)
    assert not out.exists() and not list(tmp_path.glob(".rm.*"))


def test_an_existing_out_folder_is_not_touched(base: Path, tmp_path: Path) -> None:
    out = tmp_path / "rm"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    result = train(
        [str(write(tmp_path / "p.jsonl", pairs(4))), "--base", str(base), "--out", str(out)]
    )
    assert result.exit_code == 2 and "exists" in result.output
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_parquet_pairs_train_like_jsonl(base: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = pairs(12)
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "p.parquet")
    write(tmp_path / "p.jsonl", records)
    histories = []
    for name in ("p.parquet", "p.jsonl"):
        out = tmp_path / f"rm-{name}"
        assert (
            train(
                [str(tmp_path / name), "--base", str(base), "--out", str(out), "--epochs", "1"]
            ).exit_code
            == 0
        )
        histories.append(json.loads((out / "metrics.json").read_text())["history"])
    assert histories[0] == histories[1]


def test_the_reward_model_signal_penalises_the_members_spread(base: Path, tmp_path: Path) -> None:
    out = tmp_path / "ens"
    assert (
        train(
            [
                str(write(tmp_path / "p.jsonl", pairs(8))),
                "--base",
                str(base),
                "--out",
                str(out),
                "--epochs",
                "1",
                "--ensemble",
                "4",
            ]
        ).exit_code
        == 0
    )
    batch = Trajectories.from_episodes(
        {"reward": [np.zeros(2), np.zeros(1)]},
        text={"prompt": ["1+2=?", "1+2=?"], "response": ["0127", "0123"]},
    )
    bound = build(
        "signal", {"kind": "reward_model", "path": str(out), "uncertainty_penalty": 0.5}
    ).bind(SignalContext())
    scored = bound(batch, "rm")
    model, tokenizer = load_reward_model(out)
    members = score_texts(model, tokenizer, ["1+2=?0127", "1+2=?0123"])
    want = members.mean(1) - 0.5 * members.std(1, unbiased=False)
    torch.testing.assert_close(scored.step("rm")[[1, 2]], want)
    assert scored.step("rm")[0] == 0 and (scored.step("rm_uncertainty")[[1, 2]] > 0).all()
    assert encode_texts(tokenizer, ["1"])["input_ids"].shape == (1, 1)
