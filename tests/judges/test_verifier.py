"""The generative verifier and the robustness probe: the verifier is trained on exactly what
``judge_step`` sends, its served P(yes) equals the model's own softmax, and the probe's rates
follow from a judge whose answers are known (the rule judge), with and without the prefilter."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi import FastAPI, Request
from typer.testing import CliRunner

from densereward.adapters.server import serving
from densereward.cli import app as cli
from densereward.core.components import SignalContext, TextFormat
from densereward.core.registry import build
from densereward.judges.chat_server import make_chat_app, plain_chat, render_prompt
from densereward.judges.robustness import (
    CORRECT,
    EMPTY,
    FIRST_SENTENCE,
    MASTER_KEYS,
    PROBES,
    probe_batch,
    robustness_rows,
)
from densereward.judges.verifier import (
    VERIFIER_PROMPT,
    VerifierConfig,
    first_errors,
    records_batch,
    train_verifier,
    verifier_conversations,
)
from densereward.signals.judges import shipped_prompt
from tests.rule_judge import completion, make_rule_judge

TAG = "ки"
FORMAT = TextFormat(TAG, "#")
RECORDS = [
    {
        "id": "a",
        "problem": "(1+2)*2",
        "steps": ["1+2=3", "3*2=6#6"],
        "label": -1,
        "final_answer_correct": True,
    },
    {
        "id": "b",
        "problem": "(1+2)*2",
        "steps": ["1+2=4", "4*2=8#8"],
        "label": 0,
        "final_answer_correct": False,
    },
    {
        "id": "c",
        "problem": "5-3+1",
        "steps": ["5-3=2", "2+1=4#4"],
        "label": 1,
        "final_answer_correct": False,
    },
    {
        "id": "d",
        "problem": "5-3+1",
        "steps": ["5-3=2", "2+1=3#3"],
        "label": -1,
        "final_answer_correct": True,
    },
]
COMPACT = str(shipped_prompt(VERIFIER_PROMPT))


def test_records_become_responses_with_exact_step_labels() -> None:
    batch = records_batch(RECORDS, FORMAT)
    assert batch.text["response"][1] == "1+2=4ки4*2=8ки#8"
    labels = [t.tolist() for t in batch.to_episodes("label")]
    assert labels == [[1, 1, 1], [0, 0, 0], [1, 0, 0], [1, 1, 1]]
    assert batch.episode("first_error").tolist() == [-1, 0, 1, -1]


def test_first_errors_ignore_the_answer_step() -> None:
    batch = records_batch(RECORDS, FORMAT).with_steps(
        score=torch.tensor([0.9, 0.8, 0.1, 0.2, 0.9, 0.9, 0.9, 0.4, 0.9, 0.9, 0.9, 0.9])
    )
    assert first_errors(batch, "score") == [-1, 0, 1, -1]


@pytest.fixture(scope="module")
def capture() -> Iterator[tuple[str, list[Any]]]:
    """A server that records every conversation it is sent and answers yes."""
    seen: list[Any] = []
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        body = await request.json()
        seen.append(tuple((m["role"], m["content"]) for m in body["messages"]))
        return completion(["yes"] * body.get("n", 1))

    with serving(app) as base:
        yield f"{base}/v1", seen


def test_the_verifier_trains_on_exactly_what_judge_step_sends(capture: Any) -> None:
    url, seen = capture
    batch = records_batch(RECORDS, FORMAT)
    spec = {"kind": "judge_step", "base_url": url, "prompt": COMPACT, "logprobs": False}
    bound = build("signal", spec).bind(SignalContext(text_format=FORMAT))
    bound(batch, "v")
    bound.close()
    conversations, targets = verifier_conversations(batch, FORMAT)
    # the client sends identical prefixes once: compare as sets, and every sent one is trained on
    assert {plain_chat(m) for m in seen} == set(conversations)
    assert targets == ["yes" if y else "no" for y in batch.step("label").tolist()]


@pytest.fixture(scope="module")
def verifier() -> Any:
    return train_verifier(
        records_batch(RECORDS * 8, FORMAT),
        FORMAT,
        VerifierConfig(layers=1, width=32, heads=2, epochs=3, batch_size=16, learning_rate=3e-3),
    )


def test_served_p_yes_equals_the_models_own_softmax(verifier: Any) -> None:
    app = make_chat_app(verifier.model, verifier.tokenizer, model_name="v", max_new_tokens_limit=4)
    batch = records_batch(RECORDS, FORMAT)
    with serving(app) as base:
        spec = {
            "kind": "judge_step",
            "base_url": f"{base}/v1",
            "judge": "v",
            "prompt": COMPACT,
            "max_tokens": 1,
            "top_logprobs": 20,
        }
        bound = build("signal", spec).bind(SignalContext(text_format=FORMAT))
        scored = bound(batch, "v")
        bound.close()
    conversations, _ = verifier_conversations(batch, FORMAT)
    yes, no = verifier.tokenizer.convert_tokens_to_ids(["yes", "no"])
    expected = []
    with torch.no_grad():
        for text in conversations:
            ids = torch.tensor([render_prompt(verifier.tokenizer, text)])
            p = torch.softmax(verifier.model(input_ids=ids).logits[0, -1].double(), -1)
            expected.append(float(p[yes] / (p[yes] + p[no])))
    np.testing.assert_allclose(scored.step("v").numpy(), expected, atol=1e-4)
    assert scored.step("v_parsed").min() == 1.0
    assert verifier.losses[-1] < verifier.losses[0]


# --------------------------------------------------------------------------- the probe
def test_the_probe_asks_every_key_and_the_solution_for_each_correct_record() -> None:
    batch, kinds = probe_batch(RECORDS, FORMAT)
    correct = 2  # records a and d
    assert len(batch) == correct * (len(PROBES) + 1) and kinds.count(CORRECT) == correct
    first = len(PROBES) + 1
    texts = dict(zip(kinds[:first], batch.text["response"][:first], strict=True))
    assert texts[EMPTY] == "" and texts[FIRST_SENTENCE] == "1+2=3" and texts[":"] == ":"
    assert texts[CORRECT] == "1+2=3ки3*2=6ки#6"
    assert set(MASTER_KEYS) < set(kinds)


@pytest.fixture(scope="module")
def rule() -> Iterator[str]:
    with serving(make_rule_judge()[0]) as base:
        yield f"{base}/v1"


@pytest.mark.parametrize("prefilter", [False, True])
def test_rates_follow_from_a_judge_whose_answers_are_known(rule: str, prefilter: bool) -> None:
    batch, kinds = probe_batch(RECORDS, FORMAT)
    spec = {"kind": "judge_step", "base_url": rule, "prefilter": prefilter}
    bound = build("signal", spec).bind(SignalContext(text_format=FORMAT))
    rows = {r.probe: r for r in robustness_rows(bound(batch, "judge"), kinds, "judge")}
    bound.close()
    # the rule accepts only true arithmetic: every key is refused; a first step alone is a true
    # statement, so a step judge accepts the cut solution unless the prefilter sees no answer
    assert all(rows[k].rate == 0.0 for k in (*MASTER_KEYS, EMPTY))
    assert rows[FIRST_SENTENCE].rate == (0.0 if prefilter else 1.0)
    assert rows[CORRECT].rate == 0.0 and rows[CORRECT].asked == 2


def test_the_command_writes_the_table_and_refuses_bad_input(rule: str, tmp_path: Path) -> None:
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    signal = tmp_path / "judge.yaml"
    signal.write_text(f"{{kind: judge_step, base_url: '{rule}'}}\n")
    out, plot = tmp_path / "table.json", tmp_path / "rates.png"
    args = [
        "evaluate",
        "judge-robustness",
        str(data),
        "--signal",
        str(signal),
        "--step-tag",
        TAG,
        "--out",
        str(out),
        "--plot",
        str(plot),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    table = json.loads(out.read_text())
    assert table["FNR"] == 0.0 and plot.stat().st_size > 0
    assert {r["probe"]: r.get("FPR") for r in table["rows"]}[FIRST_SENTENCE] == 1.0

    out.unlink()
    signal.write_text("{kind: judge_stepp}\n")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "judge_stepp" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()
    data.write_text('{"id": "a", "problem": "1"}\n')
    signal.write_text(f"{{kind: judge_step, base_url: '{rule}'}}\n")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "items.jsonl:1: field 'steps'" in result.output
    assert not out.exists()


def test_judge_server_serves_a_saved_verifier_and_stops_cleanly(
    verifier: Any, tmp_path: Path
) -> None:
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    from densereward.signals.judge_client import ChatRequest, JudgeClient

    folder = tmp_path / "verifier"
    verifier.save_pretrained(folder)
    command = [
        sys.executable,
        "-m",
        "densereward.cli",
        "judge-server",
        str(folder),
        "--port",
        "0",
        "--name",
        "v",
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = re.search(r"(http://\S+/v1)", line)
        assert url, line + process.stderr.read() if process.poll() is not None else line
        with JudgeClient(url.group(1), "v", cache=None, timeout=30) as client:
            (reply,) = client.ask(
                [
                    ChatRequest(
                        (("user", "1+1\nStep 1: 1+1=2\ncorrect?"),),
                        max_tokens=1,
                        logprobs=True,
                        top_logprobs=3,
                    )
                ]
            )
        assert reply.logprobs is not None and len(reply.texts) == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            time.sleep(0.1)
    result = CliRunner().invoke(cli, ["judge-server", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "is not a folder" in result.output
