"""The judge client against real servers on loopback: the local chat server (compared with the
``openai`` client) and a small FastAPI app of routes that sleep, fail, hang or answer garbage."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from densereward.signals.http import HTTPReplyError
from densereward.signals.judge_client import ChatRequest, JudgeClient, cache_key
from tests.servers import running

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")


# --------------------------------------------------------------------------- the chat server
@pytest.fixture(scope="module")
def chat() -> Iterator[tuple[str, dict[str, int]]]:
    """The local chat server with a tiny model, counting the chat requests it receives."""
    from densereward.judges.chat_server import make_chat_app
    from densereward.models.language import build_causal_lm
    from densereward.worlds.reasoning.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    model = build_causal_lm(tokenizer, layers=1, width=32, heads=2, seed=1).eval()
    app = make_chat_app(model, tokenizer, model_name="tiny", max_new_tokens_limit=32)
    counts = {"chat": 0}

    @app.middleware("http")
    async def count(request: Request, call_next: Any) -> Any:
        if request.url.path.endswith("/chat/completions"):
            counts["chat"] += 1
        return await call_next(request)

    with running(app) as base:
        yield f"{base}/v1", counts


REQUESTS = [
    ChatRequest((("user", "1+2=?"),), max_tokens=6, logprobs=True, top_logprobs=3),
    ChatRequest((("system", "be brief"), ("user", "3*4=?")), max_tokens=5),
    ChatRequest((("user", "7-5=?"),), max_tokens=4, temperature=1.0, n=3, seed=11, logprobs=True),
    ChatRequest((("user", "9"),), max_tokens=8, stop=("1",), logprobs=True, top_logprobs=2),
]


def openai_reply(client: Any, request: ChatRequest) -> Any:
    body = request.body("tiny")
    return client.chat.completions.create(**body)


def test_replies_equal_the_openai_clients(chat: tuple[str, dict[str, int]]) -> None:
    url, _ = chat
    reference = openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=60)
    judge = JudgeClient(url, "tiny", cache=None, concurrency=4, timeout=30)
    replies = judge.ask(REQUESTS)
    assert len(replies) == len(REQUESTS)
    for request, reply in zip(REQUESTS, replies, strict=True):
        expected = openai_reply(reference, request)
        assert not reply.cached
        assert reply.texts == tuple(c.message.content for c in expected.choices)
        if not request.logprobs:
            assert reply.logprobs is None
            continue
        assert reply.logprobs is not None
        for ours, theirs in zip(reply.logprobs, expected.choices, strict=True):
            want = [
                (t.token, t.logprob, tuple((a.token, a.logprob) for a in t.top_logprobs))
                for t in theirs.logprobs.content
            ]
            assert [tuple(t) for t in ours] == want
    assert any(r.logprobs and r.logprobs[0] and r.logprobs[0][0].top for r in replies)
    assert judge.stats.requests == len(REQUESTS) and judge.stats.cache_hits == 0


def test_cache_answers_a_rerun_without_requests(
    chat: tuple[str, dict[str, int]], tmp_path: Path
) -> None:
    url, counts = chat
    path = tmp_path / "judge.sqlite"
    first = JudgeClient(url, "tiny", cache=path).ask(REQUESTS)
    before = counts["chat"]
    with JudgeClient(url, "tiny", cache=path) as again:
        second = again.ask(REQUESTS)
        assert counts["chat"] == before  # zero HTTP requests
        assert again.stats.cache_hits == len(REQUESTS) and again.stats.requests == 0
    assert all(r.cached for r in second)
    assert [(r.texts, r.logprobs) for r in second] == [(r.texts, r.logprobs) for r in first]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT count(*) FROM replies").fetchone()[0] == len(REQUESTS)

    # a changed field is a miss; duplicates in one batch are sent once
    base = REQUESTS[2]
    changed = [
        ChatRequest(base.messages, base.max_tokens, base.temperature, base.n, seed=12),
        ChatRequest(base.messages, base.max_tokens, 0.5, base.n, base.seed),
    ]
    with JudgeClient(url, "tiny", cache=path) as third:
        replies = third.ask([*changed, changed[0], REQUESTS[0]])
        assert counts["chat"] == before + 2
        assert [r.cached for r in replies] == [False, False, False, True]
        assert replies[0] == replies[2]
        assert third.stats.requests == 2 and third.stats.cache_hits == 1
    assert cache_key(changed[0].body("tiny")) != cache_key(base.body("tiny"))
    assert cache_key(base.body("tiny")) != cache_key(base.body("other"))


# --------------------------------------------------------------------------- a test server
def completion(text: str) -> dict[str, Any]:
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None}
    return {"object": "chat.completion", "choices": [choice]}


class Routes:
    """Routes under ``/{name}/v1/chat/completions``; records concurrency and calls per route."""

    def __init__(self) -> None:
        self.app = FastAPI()
        self.active = 0
        self.max_active = 0
        self.calls: dict[str, int] = {}
        self.seen: dict[str, int] = {}

        @self.app.post("/{name}/v1/chat/completions")
        async def handle(name: str, request: Request) -> Response:
            body = await request.json()
            content = body["messages"][-1]["content"]
            self.calls[name] = self.calls.get(name, 0) + 1
            if name == "slow":
                self.active += 1
                self.max_active = max(self.max_active, self.active)
                try:
                    await asyncio.sleep(0.2)
                finally:
                    self.active -= 1
            elif name == "flaky":  # 500 on each content's first call
                self.seen[content] = self.seen.get(content, 0) + 1
                if self.seen[content] == 1:
                    return JSONResponse({"detail": "busy"}, status_code=500)
            elif name == "fail" or (name == "mixed" and content.startswith("fail")):
                return JSONResponse({"detail": "broken"}, status_code=500)
            elif name == "hang":
                await asyncio.sleep(3)
            elif name == "garbage":
                return Response(b'{"choices": [', media_type="application/json")
            elif name == "wrong":
                return JSONResponse({"choices": [{"message": {"content": 3}}]})
            return JSONResponse(completion(content))


@pytest.fixture(scope="module")
def routes() -> Iterator[tuple[str, Routes]]:
    server = Routes()
    with running(server.app) as base:
        yield base, server


def ask(content: str, **fields: Any) -> ChatRequest:
    return ChatRequest((("user", content),), **fields)


def test_concurrency_is_bounded_and_order_kept(routes: tuple[str, Routes]) -> None:
    base, server = routes
    judge = JudgeClient(f"{base}/slow/v1", "m", cache=None, concurrency=4, timeout=10)
    start = time.monotonic()
    replies = judge.ask([ask(f"q{i}") for i in range(20)])
    took = time.monotonic() - start
    assert [r.texts for r in replies] == [(f"q{i}",) for i in range(20)]
    assert 2 <= server.max_active <= 4
    assert took >= 5 * 0.2 - 0.05  # 20 requests, 4 at a time
    assert server.active == 0


def test_a_retried_500_succeeds(routes: tuple[str, Routes], tmp_path: Path) -> None:
    base, server = routes
    judge = JudgeClient(f"{base}/flaky/v1", "m", cache=tmp_path / "c.db", retries=2, backoff=0.01)
    replies = judge.ask([ask("a"), ask("b")])
    assert [r.texts for r in replies] == [("a",), ("b",)]
    assert judge.stats.requests == 2 and judge.stats.attempts == 4 and judge.stats.failures == 0
    assert server.calls["flaky"] == 4


def test_failures_raise_one_line_and_keep_the_successes(
    routes: tuple[str, Routes], tmp_path: Path
) -> None:
    base, server = routes
    url = f"{base}/fail/v1"
    with pytest.raises(HTTPReplyError) as caught:
        JudgeClient(url, "m", cache=None, retries=2, backoff=0.01).ask([ask("x")])
    message = str(caught.value)
    assert "\n" not in message
    assert f"{url}/chat/completions" in message and "HTTP 500" in message
    assert "after 3 attempts" in message

    # the requests that succeeded in the same ask are cached; a rerun sends only the failure
    path = tmp_path / "mixed.db"
    batch = [ask("ok1"), ask("fail1"), ask("ok2"), ask("ok3")]
    judge = JudgeClient(f"{base}/mixed/v1", "m", cache=path, retries=1, backoff=0.01)
    with pytest.raises(HTTPReplyError, match="HTTP 500"):
        judge.ask(batch)
    assert judge.stats.failures == 1
    with sqlite3.connect(path) as db:
        stored = {row[0] for row in db.execute("SELECT key FROM replies")}
    assert stored == {cache_key(r.body("m")) for r in (batch[0], batch[2], batch[3])}
    calls = server.calls["mixed"]
    again = JudgeClient(f"{base}/mixed/v1", "m", cache=path, retries=0)
    with pytest.raises(HTTPReplyError, match=r"after 1 attempt$"):
        again.ask(batch)
    assert server.calls["mixed"] == calls + 1
    assert again.stats.cache_hits == 3
    assert [r.texts for r in again.ask([batch[0], batch[3]])] == [("ok1",), ("ok3",)]

    # after a failure, requests not yet started are not sent
    calls = server.calls["mixed"]
    serial = JudgeClient(f"{base}/mixed/v1", "m", cache=None, concurrency=1, retries=0)
    with pytest.raises(HTTPReplyError):
        serial.ask([ask("fail2"), ask("ok4"), ask("ok5")])
    assert server.calls["mixed"] == calls + 1 and serial.stats.requests == 1


def test_a_server_that_never_answers_fails_in_time(routes: tuple[str, Routes]) -> None:
    base, _ = routes
    timeout, retries = 0.4, 1
    judge = JudgeClient(f"{base}/hang/v1", "m", cache=None, timeout=timeout, retries=retries)
    start = time.monotonic()
    with pytest.raises(HTTPReplyError, match="no complete reply within"):
        judge.ask([ask("h1"), ask("h2")])
    # the backoff before the retry is at most 0.5 s
    assert time.monotonic() - start < timeout * (retries + 1) + 0.5 + 1.0


@pytest.mark.parametrize(
    ("route", "problem"),
    [("garbage", "reply is not JSON"), ("wrong", r"choices\[0\]\.message\.content")],
)
def test_a_malformed_reply_is_one_line_and_not_cached(
    routes: tuple[str, Routes], tmp_path: Path, route: str, problem: str
) -> None:
    base, server = routes
    path = tmp_path / "bad.db"
    judge = JudgeClient(f"{base}/{route}/v1", "m", cache=path, retries=3, backoff=0.01)
    with pytest.raises(HTTPReplyError, match=problem) as caught:
        judge.ask([ask("g")])
    assert "\n" not in str(caught.value)
    assert server.calls[route] == 1  # not retried
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM replies").fetchone()[0] == 0


def test_parse_failures_are_counted() -> None:
    judge = JudgeClient("http://127.0.0.1:9/v1", "m", cache=None)
    judge.count_parse_failure("judge_step")
    judge.count_parse_failure("judge_step")
    judge.count_parse_failure("judge_outcome")
    assert judge.stats.parse_failures == {"judge_step": 2, "judge_outcome": 1}
    assert "judge_outcome=1, judge_step=2" in judge.stats.summary()
    assert judge.ask([]) == []


def test_requests_are_checked() -> None:
    with pytest.raises(ValueError, match="role"):
        ask("x").__class__((("robot", "x"),))
    with pytest.raises(ValueError, match="top_logprobs"):
        ask("x", top_logprobs=2)
    assert ask("x", stop="a").stop == ("a",)
