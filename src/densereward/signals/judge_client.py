"""Batched, cached requests to an OpenAI-compatible chat server: the client LLM judges ask through.

:class:`JudgeClient` sends a batch of :class:`ChatRequest` to ``POST {base_url}/chat/completions``
(``base_url`` ends in ``/v1``, as for the ``openai`` client) and returns one :class:`JudgeReply`
per request. The contract:

- **Order.** ``ask(requests)[i]`` answers ``requests[i]``. Requests run concurrently, at most
  ``concurrency`` in flight, each a :class:`~densereward.signals.http.JSONClient` call: no new
  HTTP code, the same deadline, size bound and retries.
- **Retries.** Statuses 429, 500, 502, 503 and 504, refused or dropped connections and attempts
  that time out are retried, ``retries`` times after the first attempt, with exponential backoff;
  other statuses and malformed replies are not (asking again gets the same answer). Every attempt
  ends within ``timeout`` seconds and every request within its deadline (every attempt and every
  wait between them), so ``ask`` never hangs.
- **Cache key.** ``sha256`` of the canonical JSON (sorted keys, no spaces) of the exact request
  body, which names the ``model``: the same body is answered from the cache whatever server
  ``base_url`` names, so keep one cache file per server when two serve different weights under
  one name. Any changed field (a seed, the temperature, ``n``, a message) is a different key.
  Identical requests in one batch are sent once. An unseeded sampled request is cached too: its
  rerun returns the same sample (ask with ``n`` or distinct seeds for independent samples).
- **What is cached.** Only successful replies, checked to be chat completions with ``n`` choices
  whose contents are strings; an error status, a timeout or a malformed reply is never cached.
  The cache is SQLite in WAL mode, one table ``replies(key TEXT PRIMARY KEY, body TEXT)`` holding
  the server's reply as JSON; each reply is committed as soon as it arrives, so a crash loses
  nothing already answered and a rerun sends no request for what is cached.
- **Failures.** A request that fails after its retries makes ``ask`` raise its one-line
  :class:`~densereward.signals.http.HTTPReplyError` (naming the URL and the attempts), once the
  requests already in flight have finished and been cached; requests not yet started are not
  sent (a rerun sends them, and only them). When several fail, the first in input order is
  raised; :attr:`JudgeClient.stats` counts them all.
- **Parsing.** A judge's prompt family reads a verdict from each reply text. A text that cannot be
  parsed is counted with :meth:`JudgeClient.count_parse_failure` under the signal's name and
  reported (``stats.parse_failures``), never silently scored.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from densereward.signals.http import DEFAULT_MAX_BYTES, HTTPReplyError, JSONClient, Reply

ROLES = frozenset({"system", "developer", "user", "assistant"})


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion request; :meth:`body` is its JSON body (fields left ``None`` are not
    sent, so the server's defaults apply)."""

    messages: tuple[tuple[str, str], ...]
    """``(role, content)`` pairs"""
    max_tokens: int | None = None
    temperature: float = 0.0
    """0 is greedy decoding"""
    n: int = 1
    """choices wanted"""
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    """with ``logprobs``: the ``k`` most likely tokens at each position"""
    stop: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        messages = tuple((str(role), content) for role, content in self.messages)
        if not messages:
            raise ValueError("ChatRequest.messages must not be empty")
        for role, content in messages:
            if role not in ROLES:
                raise ValueError(f"ChatRequest.messages: unknown role {role!r}")
            if not isinstance(content, str):
                raise ValueError(f"ChatRequest.messages: content of {role!r} is not a string")
        object.__setattr__(self, "messages", messages)
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif self.stop is not None:
            object.__setattr__(self, "stop", tuple(self.stop))
        if self.n < 1:
            raise ValueError(f"ChatRequest.n must be at least 1, got {self.n}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"ChatRequest.max_tokens must be at least 1, got {self.max_tokens}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"ChatRequest.temperature must be >= 0, got {self.temperature}")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("ChatRequest.top_logprobs needs logprobs=True")

    def body(self, model: str) -> dict[str, Any]:
        """The JSON body of ``POST /v1/chat/completions`` asking ``model``."""
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": r, "content": c} for r, c in self.messages],
            "temperature": self.temperature,
            "n": self.n,
        }
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.seed is not None:
            body["seed"] = self.seed
        if self.logprobs:
            body["logprobs"] = True
        if self.top_logprobs is not None:
            body["top_logprobs"] = self.top_logprobs
        if self.stop is not None:
            body["stop"] = list(self.stop)
        return body


class TokenLogprob(NamedTuple):
    """One generated token: its text, its log-probability and the most likely alternatives."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class JudgeReply:
    """The answer to one :class:`ChatRequest`."""

    texts: tuple[str, ...]
    """one per choice, in the server's ``index`` order"""
    logprobs: tuple[tuple[TokenLogprob, ...], ...] | None
    """per choice, the tokens' log-probabilities; ``None`` when the server gave none"""
    cached: bool
    """read from the cache, not asked of the server"""


@dataclass
class JudgeStats:
    """What a :class:`JudgeClient` has done since it was made."""

    requests: int = 0
    """requests sent to the server (each one call, however many attempts it took)"""
    attempts: int = 0
    """HTTP attempts those requests made, retries included"""
    cache_hits: int = 0
    """requests answered from the cache"""
    failures: int = 0
    """requests that failed after their retries"""
    parse_failures: dict[str, int] = field(default_factory=dict)
    """per signal name, reply texts its prompt family could not parse"""

    def summary(self) -> str:
        """One line of these counts."""
        parsed = ", ".join(f"{k}={v}" for k, v in sorted(self.parse_failures.items()))
        return (
            f"{self.requests} requests ({self.attempts} attempts), {self.cache_hits} cache hits, "
            f"{self.failures} failures, parse failures: {parsed or 'none'}"
        )


def cache_key(body: Mapping[str, Any]) -> str:
    """``sha256`` of the canonical JSON of a request body (sorted keys, no spaces).

    >>> cache_key({"b": 1, "a": [1.0]}) == cache_key({"a": [1.0], "b": 1})
    True
    """
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class JudgeClient:
    """Asks an OpenAI-compatible server at ``base_url`` batches of chat requests (see the module
    docstring for the contract).

    ``cache`` is the SQLite file of past replies (``None``: no cache); ``concurrency`` the most
    requests in flight; ``timeout`` the seconds one attempt may take; ``retries`` the attempts
    after the first; ``max_bytes`` the largest reply read; ``backoff`` the seconds before the
    first retry (each later wait doubles it, up to 8 s); ``api_key`` is sent as a bearer token.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        cache: str | Path | None,
        concurrency: int = 8,
        timeout: float = 60.0,
        retries: int = 3,
        max_bytes: int = DEFAULT_MAX_BYTES,
        api_key: str | None = None,
        backoff: float = 0.5,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"JudgeClient.concurrency must be at least 1, got {concurrency}")
        if retries < 0:
            raise ValueError(f"JudgeClient.retries must not be negative, got {retries}")
        self.url = f"{base_url.rstrip('/')}/chat/completions"
        self.model = model
        self.concurrency = concurrency
        max_backoff = 8.0
        waits = sum(min(max_backoff, backoff * 2**k) for k in range(retries))
        self._http = JSONClient(
            timeout=timeout,
            # every attempt and every wait fits: the deadline only ever ends a call early when
            # a Retry-After asks for longer than the backoff would have waited
            deadline=timeout * (retries + 1) + waits + 1.0,
            max_bytes=max_bytes,
            attempts=retries + 1,
            backoff=backoff,
            max_backoff=max_backoff,
        )
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.stats = JudgeStats()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if cache is not None:
            Path(cache).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(cache), check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, body TEXT NOT NULL)"
            )
            self._db.commit()

    # ------------------------------------------------------------------ asking
    def ask(self, requests: Sequence[ChatRequest]) -> list[JudgeReply]:
        """One reply per request, in input order, or the first failure's
        :class:`HTTPReplyError` once the requests in flight have finished and been cached."""
        with self._lock:
            bodies = [request.body(self.model) for request in requests]
            keys = [cache_key(body) for body in bodies]
            replies: dict[str, JudgeReply] = {}
            wanted: dict[str, tuple[ChatRequest, dict[str, Any]]] = {}
            for key, request, body in zip(keys, requests, bodies, strict=True):
                if key in replies or key in wanted:
                    continue
                hit = self._lookup(key, request)
                if hit is not None:
                    replies[key] = hit
                    self.stats.cache_hits += 1
                else:
                    wanted[key] = (request, body)
            failures = self._fetch(wanted, replies)
            if failures:
                first = next(failures[key] for key in keys if key in failures)
                raise first
            return [replies[key] for key in keys]

    def _fetch(
        self,
        wanted: Mapping[str, tuple[ChatRequest, dict[str, Any]]],
        replies: dict[str, JudgeReply],
    ) -> dict[str, HTTPReplyError]:
        """Sends ``wanted``; stores each reply in ``replies`` and the cache as it arrives."""
        failures: dict[str, HTTPReplyError] = {}
        if not wanted:
            return failures
        pending = iter(wanted.items())
        running: dict[Future[tuple[Reply, JudgeReply]], str] = {}
        workers = min(self.concurrency, len(wanted))
        with ThreadPoolExecutor(workers, thread_name_prefix="densereward-judge") as pool:

            def submit() -> None:
                # one more request starts only when one has ended, and none after a failure
                if failures:
                    return
                item = next(pending, None)
                if item is not None:
                    key, (request, body) = item
                    running[pool.submit(self._post, request, body)] = key
                    self.stats.requests += 1

            for _ in range(workers):
                submit()
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    key = running.pop(future)
                    try:
                        reply, parsed = future.result()
                    except HTTPReplyError as error:
                        self.stats.failures += 1
                        self.stats.attempts += error.attempts
                        failures[key] = error
                    else:
                        self.stats.attempts += reply.attempts
                        self._store(key, reply.body)
                        replies[key] = parsed
                    submit()
        return failures

    def _post(self, request: ChatRequest, body: dict[str, Any]) -> tuple[Reply, JudgeReply]:
        reply = self._http.post(self.url, body, self._headers)
        return reply, parse_reply(reply, request.n, cached=False)

    # ------------------------------------------------------------------ cache
    def _lookup(self, key: str, request: ChatRequest) -> JudgeReply | None:
        if self._db is None:
            return None
        row = self._db.execute("SELECT body FROM replies WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return parse_reply(Reply(f"cache {key[:12]}", 0, json.loads(row[0])), request.n, True)

    def _store(self, key: str, body: Mapping[str, Any]) -> None:
        if self._db is None:
            return
        self._db.execute(
            "INSERT OR REPLACE INTO replies (key, body) VALUES (?, ?)",
            (key, json.dumps(body, ensure_ascii=False)),
        )
        self._db.commit()

    # ------------------------------------------------------------------ parse failures
    def count_parse_failure(self, signal: str) -> None:
        """Counts a reply text that ``signal``'s prompt family could not parse (it is reported
        in ``stats.parse_failures``, never scored)."""
        with self._lock:
            self.stats.parse_failures[signal] = self.stats.parse_failures.get(signal, 0) + 1

    def close(self) -> None:
        """Closes the cache (``ask`` cannot be called after)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> JudgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_reply(reply: Reply, n: int, cached: bool) -> JudgeReply:
    """A chat completion's ``n`` choices (texts and log-probabilities), or
    :class:`HTTPReplyError` naming what is malformed."""
    choices = reply.body.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise reply.error("choices is not a list of objects")
    if len(choices) != n:
        raise reply.error(f"{len(choices)} choices, expected {n}")
    indices = [c.get("index", i) for i, c in enumerate(choices)]
    if sorted(indices) != list(range(n)):
        raise reply.error(f"choice indices are {indices}, expected 0 to {n - 1}")
    ordered = [c for _, c in sorted(zip(indices, choices, strict=True), key=lambda p: p[0])]
    texts = []
    for i, choice in enumerate(ordered):
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise reply.error(f"choices[{i}].message.content is not a string")
        texts.append(content)
    given = [c.get("logprobs") is not None for c in ordered]
    if not any(given):
        return JudgeReply(tuple(texts), None, cached)
    if not all(given):
        raise reply.error("some choices have logprobs and some do not")
    logprobs = tuple(_logprobs(reply, i, c["logprobs"]) for i, c in enumerate(ordered))
    return JudgeReply(tuple(texts), logprobs, cached)


def _logprobs(reply: Reply, i: int, value: Any) -> tuple[TokenLogprob, ...]:
    content = value.get("content") if isinstance(value, dict) else None
    if content is None:
        content = []
    if not isinstance(content, list):
        raise reply.error(f"choices[{i}].logprobs.content is not a list")
    return tuple(
        _token(reply, f"choices[{i}].logprobs.content[{j}]", e) for j, e in enumerate(content)
    )


def _token(reply: Reply, where: str, entry: Any) -> TokenLogprob:
    token, logprob = _pair(reply, where, entry)
    top = entry.get("top_logprobs") or []
    if not isinstance(top, list):
        raise reply.error(f"{where}.top_logprobs is not a list")
    pairs = tuple(_pair(reply, f"{where}.top_logprobs[{k}]", t) for k, t in enumerate(top))
    return TokenLogprob(token, logprob, pairs)


def _pair(reply: Reply, where: str, entry: Any) -> tuple[str, float]:
    if not isinstance(entry, dict):
        raise reply.error(f"{where} is not an object")
    token, logprob = entry.get("token"), entry.get("logprob")
    if not isinstance(token, str):
        raise reply.error(f"{where}.token is not a string")
    if isinstance(logprob, bool) or not isinstance(logprob, int | float):
        raise reply.error(f"{where}.logprob is not a number")
    return token, float(logprob)
