"""The local OpenAI-compatible chat server, driven by the real ``openai`` client.

One real uvicorn server (a thread, loopback, free port) is shared by the module. Expected values
come from the model called directly in the test: a plain greedy loop that reruns the whole
sequence every step (no cache) and takes ``log_softmax`` of its logits.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from densereward.judges.chat_server import make_chat_app
from densereward.models.language import build_causal_lm
from densereward.worlds.reasoning.tokenizer import build_tokenizer
from tests.servers import running

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[2]
MAX_BYTES = 64 * 1024
LIMIT = 64
MODEL_SEED = 1  # this seed's greedy reply to PROMPT changes token after a few steps (for `stop`)
MESSAGES = [{"role": "user", "content": "1+2=?"}]
FALLBACK = "<bos>user: 1+2=?\nassistant: "
"""what the plain fallback renders MESSAGES to (the char tokenizer has no chat template)"""


def build_model(tokenizer: Any) -> Any:
    return build_causal_lm(tokenizer, layers=1, width=32, heads=2, seed=MODEL_SEED).eval()


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return build_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer: Any) -> Any:
    return build_model(tokenizer)


@pytest.fixture(scope="module")
def url(model: Any, tokenizer: Any) -> Iterator[str]:
    # the server gets its own tokenizer and model (equal to the test's): nothing is shared
    served_tokenizer = build_tokenizer()
    app = make_chat_app(
        build_model(served_tokenizer),
        served_tokenizer,
        model_name="tiny",
        max_request_bytes=MAX_BYTES,
        max_new_tokens_limit=LIMIT,
    )
    with running(app) as base:
        yield base


@pytest.fixture(scope="module")
def client(url: str) -> Any:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)


def encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@torch.no_grad()
def greedy(model: Any, prompt: list[int], steps: int, eos: int) -> tuple[list[int], torch.Tensor]:
    """Plain greedy decoding: the whole sequence rerun every step, argmax of the last logits.
    Returns the tokens (up to and including EOS) and ``log_softmax`` of each step's logits."""
    ids, rows = list(prompt), []
    for _ in range(steps):
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
        rows.append(torch.log_softmax(logits.double(), -1))
        ids.append(int(logits.argmax()))
        if ids[-1] == eos:
            break
    return ids[len(prompt) :], torch.stack(rows)


@torch.no_grad()
def reference_logprobs(model: Any, prompt: list[int], response: list[int]) -> torch.Tensor:
    """``log_softmax`` of the model's logits at every response position, ``[T, V]``."""
    logits = model(input_ids=torch.tensor([prompt + response])).logits[0]
    return torch.log_softmax(logits[len(prompt) - 1 : -1].double(), -1)


def chat(client: Any, **options: Any) -> Any:
    return client.chat.completions.create(model="tiny", messages=MESSAGES, **options)


def test_greedy_chat_completion_is_plain_greedy_decoding(
    client: Any, model: Any, tokenizer: Any
) -> None:
    prompt = encode(tokenizer, FALLBACK)
    expected, _ = greedy(model, prompt, 12, tokenizer.eos_token_id)
    reply = chat(client, max_tokens=12, temperature=0)
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert reply.model == "tiny" and isinstance(reply.created, int)
    (choice,) = reply.choices
    assert choice.index == 0 and choice.message.role == "assistant"
    assert choice.message.content == tokenizer.decode(expected, skip_special_tokens=True)
    assert choice.message.content.strip(), "a degenerate reply would prove little"
    assert choice.finish_reason == "length" and len(expected) == 12
    assert choice.logprobs is None
    assert reply.usage.prompt_tokens == len(prompt)
    assert reply.usage.completion_tokens == 12
    assert reply.usage.total_tokens == len(prompt) + 12


def test_logprobs_are_the_models_log_softmax_at_each_chosen_token(
    client: Any, model: Any, tokenizer: Any
) -> None:
    prompt = encode(tokenizer, FALLBACK)
    expected, rows = greedy(model, prompt, 10, tokenizer.eos_token_id)
    reply = chat(client, max_tokens=10, temperature=0, logprobs=True, top_logprobs=5)
    content = reply.choices[0].logprobs.content
    assert [entry.token for entry in content] == [tokenizer.decode([t]) for t in expected]
    for entry, token, row in zip(content, expected, rows, strict=True):
        assert entry.logprob == pytest.approx(float(row[token]), abs=1e-4)
        assert entry.bytes == list(entry.token.encode())
        top = [t.logprob for t in entry.top_logprobs]
        assert len(top) == 5 and top == sorted(top, reverse=True)
        want = row.topk(5).values.tolist()
        assert top == pytest.approx(want, abs=1e-4)
        assert entry.token == entry.top_logprobs[0].token  # greedy: the chosen token is the argmax


def test_sampled_logprobs_are_at_temperature_one_whatever_the_sampling_temperature(
    client: Any, model: Any, tokenizer: Any
) -> None:
    prompt = encode(tokenizer, FALLBACK)
    reply = chat(client, max_tokens=10, temperature=0.5, seed=3, logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    response = tokenizer.convert_tokens_to_ids([entry.token for entry in content])
    rows = reference_logprobs(model, prompt, response)
    for entry, token, row in zip(content, response, rows, strict=True):
        assert entry.logprob == pytest.approx(float(row[token]), abs=1e-4)
        top = [t.logprob for t in entry.top_logprobs]
        assert top == pytest.approx(row.topk(3).values.tolist(), abs=1e-4)
        if entry.logprob >= top[0] - 1e-6:  # the chosen token was the argmax
            assert entry.token in [t.token for t in entry.top_logprobs]


def test_seeded_samples_repeat_and_other_seeds_differ(client: Any) -> None:
    def texts(seed: int) -> list[str]:
        reply = chat(client, n=4, temperature=1, seed=seed, max_tokens=8)
        assert [c.index for c in reply.choices] == [0, 1, 2, 3]
        return [c.message.content for c in reply.choices]

    first = texts(11)
    assert texts(11) == first
    assert len(set(first)) > 1, "the 4 samples of one request should differ"
    assert texts(12) != first


def test_stop_truncates_and_max_tokens_sets_length(client: Any, model: Any, tokenizer: Any) -> None:
    prompt = encode(tokenizer, FALLBACK)
    expected, _ = greedy(model, prompt, 12, tokenizer.eos_token_id)
    pieces = [tokenizer.decode([t]) for t in expected]
    # the first token that differs from the first one: a stop string the reply reaches
    cut = next(i for i, piece in enumerate(pieces) if piece != pieces[0])
    for stop in (pieces[cut], [pieces[cut], "never"]):
        reply = chat(client, max_tokens=12, temperature=0, stop=stop, logprobs=True)
        (choice,) = reply.choices
        assert choice.finish_reason == "stop"
        assert choice.message.content == "".join(pieces[:cut])
        assert reply.usage.completion_tokens == cut + 1  # the token that completed the stop
        assert [e.token for e in choice.logprobs.content] == pieces[: cut + 1]
    reply = chat(client, max_tokens=3, temperature=0, n=2)
    assert [c.finish_reason for c in reply.choices] == ["length", "length"]
    assert [c.message.content for c in reply.choices] == ["".join(pieces[:3])] * 2
    assert reply.usage.completion_tokens == 6
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 6


def test_legacy_completion_has_openais_shape_and_logprobs(
    client: Any, model: Any, tokenizer: Any
) -> None:
    text = "3*(4+5)=?"
    prompt = encode(tokenizer, "<bos>" + text)
    expected, rows = greedy(model, prompt, 6, tokenizer.eos_token_id)
    reply = client.completions.create(
        model="tiny", prompt=text, max_tokens=6, temperature=0, logprobs=3
    )
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-")
    (choice,) = reply.choices
    assert choice.text == tokenizer.decode(expected, skip_special_tokens=True)
    assert choice.finish_reason == "length"
    logprobs = choice.logprobs
    assert logprobs.tokens == [tokenizer.decode([t]) for t in expected]
    want = [float(row[t]) for t, row in zip(expected, rows, strict=True)]
    assert logprobs.token_logprobs == pytest.approx(want, abs=1e-4)
    for token, logprob, top in zip(
        logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True
    ):
        assert 3 <= len(top) <= 4 and top[token] == logprob
    offsets = [len(text) + sum(len(t) for t in logprobs.tokens[:i]) for i in range(6)]
    assert logprobs.text_offset == offsets
    assert reply.usage.prompt_tokens == len(prompt) and reply.usage.completion_tokens == 6


def test_chat_template_renders_the_prompt_when_the_tokenizer_has_one(tokenizer: Any) -> None:
    templated = build_tokenizer()
    templated.chat_template = (
        "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}?{% endif %}"
    )
    model = build_model(templated)
    prompt = encode(templated, "<bos>3*(4+5)=?")  # the template's BOS, not a second one
    expected, _ = greedy(model, prompt, 8, templated.eos_token_id)
    app = make_chat_app(model, templated, max_new_tokens_limit=LIMIT)
    with running(app) as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(
            model="local",
            messages=[{"role": "user", "content": "3*(4+5)"}, {"role": "user", "content": "="}],
            max_tokens=8,
            temperature=0,
        )
    assert reply.usage.prompt_tokens == len(prompt)
    assert reply.choices[0].message.content == tokenizer.decode(expected, skip_special_tokens=True)


def test_models_and_health(client: Any, url: str) -> None:
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert httpx.get(f"{url}/health").json() == {"status": "ok", "model": "tiny"}


GOOD = {"model": "tiny", "messages": MESSAGES, "max_tokens": 4, "temperature": 0}


def _body(**fields: object) -> bytes:
    return json.dumps({**GOOD, **fields}).encode()


MALFORMED = {
    "not_json": ("chat", b"{not json", 422, "body: Invalid JSON"),
    "n_zero": ("chat", _body(n=0), 422, "field 'n'"),
    "n_too_many": ("chat", _body(n=99), 422, "field 'n'"),
    "max_tokens_over_the_limit": ("chat", _body(max_tokens=LIMIT + 1), 422, "field 'max_tokens'"),
    "max_tokens_and_completion_tokens": (
        "chat",
        _body(max_completion_tokens=4),
        422,
        "field 'max_completion_tokens'",
    ),
    "messages_empty": ("chat", _body(messages=[]), 422, "field 'messages'"),
    "messages_missing": ("chat", json.dumps({"model": "tiny"}).encode(), 422, "field 'messages'"),
    "content_not_a_string": (
        "chat",
        _body(messages=[{"role": "user", "content": 5}]),
        422,
        "field 'messages[0].content'",
    ),
    "unknown_role": (
        "chat",
        _body(messages=[{"role": "robot", "content": "hi"}]),
        422,
        "field 'messages[0].role'",
    ),
    "temperature_a_string": ("chat", _body(temperature="0"), 422, "field 'temperature'"),
    "n_a_bool": ("chat", _body(n=True), 422, "field 'n'"),
    "stop_a_number": ("chat", _body(stop=3), 422, "field 'stop'"),
    "stop_empty": ("chat", _body(stop=[""]), 422, "field 'stop'"),
    "top_logprobs_without_logprobs": ("chat", _body(top_logprobs=2), 422, "field 'top_logprobs'"),
    "top_logprobs_too_many": (
        "chat",
        _body(logprobs=True, top_logprobs=21),
        422,
        "field 'top_logprobs'",
    ),
    "unknown_field": ("chat", _body(top_k=5), 422, "field 'top_k'"),
    "streaming": ("chat", _body(stream=True), 422, "field 'stream'"),
    "over_the_positions": (
        "chat",
        _body(messages=[{"role": "user", "content": "1" * 250}]),
        400,
        "over the model's 256 positions",
    ),
    "over_the_size_limit": (
        "chat",
        _body(messages=[{"role": "user", "content": "x" * MAX_BYTES}]),
        413,
        "over the limit",
    ),
    "completion_prompt_not_a_string": (
        "completions",
        json.dumps({"model": "tiny", "prompt": ["1+2"]}).encode(),
        422,
        "field 'prompt'",
    ),
    "completion_logprobs_a_bool": (
        "completions",
        json.dumps({"model": "tiny", "prompt": "1+2", "logprobs": True}).encode(),
        422,
        "field 'logprobs'",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_request_is_refused_in_one_line(url: str, case: str) -> None:
    route, body, status, detail = MALFORMED[case]
    with httpx.Client(base_url=f"{url}/v1", timeout=30) as http:
        reply = http.post(
            f"/{route}" if route == "completions" else "/chat/completions",
            content=body,
            headers={"content-type": "application/json"},
        )
        assert reply.status_code == status, reply.text
        message = reply.json()["detail"]
        assert detail in message
        assert "\n" not in message and "Traceback" not in message
        after = http.post("/chat/completions", json=GOOD)  # the server still answers
        assert after.status_code == 200
        assert after.json()["usage"]["completion_tokens"] == 4


def test_concurrent_requests_get_their_sequential_answers(client: Any) -> None:
    requests: list[dict[str, Any]] = [
        {"temperature": 0, "max_tokens": 6},
        {"temperature": 1, "seed": 1, "n": 3, "max_tokens": 8},
        {"temperature": 1, "seed": 2, "max_tokens": 5, "logprobs": True, "top_logprobs": 2},
        {"temperature": 0.7, "seed": 3, "n": 2, "max_tokens": 7, "stop": "1"},
        {"temperature": 1, "seed": 4, "max_tokens": 9},
        {"temperature": 0, "max_tokens": 4, "logprobs": True},
    ]

    def answer(options: dict[str, Any]) -> list[Any]:
        reply = chat(client, **options)
        return [c.model_dump() for c in reply.choices] + [reply.usage.model_dump()]

    sequential = [answer(options) for options in requests]
    with ThreadPoolExecutor(len(requests)) as pool:
        concurrent = list(pool.map(answer, requests))
    assert concurrent == sequential


SERVE = """
import sys
from densereward.judges.chat_server import serve_chat
from densereward.models.language import build_causal_lm
from densereward.worlds.reasoning.tokenizer import build_tokenizer

tokenizer = build_tokenizer()
model = build_causal_lm(tokenizer, layers=1, width=32, heads=2)
serve_chat(model, tokenizer, port=0, log_level="warning",
           on_ready=lambda host, port: print(f"ready {port}", flush=True))
print("stopped", flush=True)
"""


def test_serve_chat_answers_then_stops_cleanly_on_sigterm() -> None:
    environment = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE], stdout=subprocess.PIPE, text=True, env=environment
    )
    try:
        assert process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        assert selector.select(60), "serve_chat did not get ready"
        line = process.stdout.readline()
        assert line.startswith("ready "), line
        port = int(line.split()[1])
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        # greedy: a sampled reply may end at an early end-of-sequence, which made this flaky
        reply = chat(client, max_tokens=3, temperature=0)
        (choice,) = reply.choices
        tokens = reply.usage.completion_tokens
        assert 1 <= tokens <= 3
        assert choice.finish_reason == ("length" if tokens == 3 else "stop")
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
        assert process.returncode == 0 and "stopped" in out
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
