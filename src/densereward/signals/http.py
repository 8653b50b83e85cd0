"""JSON over HTTP with a deadline: how annotators and LLM judges ask an OpenAI-compatible server.

A request made in the background of a training run must end on its own, whatever the server
does: a server that stops answering, drips its reply a byte at a time, closes the connection
half-way, answers with five gigabytes, or with JSON of the wrong shape. :class:`JSONClient`
gives every call a total deadline, a bound on the reply's size and a bounded number of retries,
and turns every failure into one :class:`HTTPReplyError` whose one-line message names the URL,
the number of attempts and what was wrong.

The deadline is kept at the socket: every connect, TLS handshake, write and read of one attempt
is given the time left until that attempt's deadline (and fails once none is left). A client
that only checked the clock between chunks of the body (httpx's per-phase timeouts, urllib's
``timeout``) would still wait a full read timeout for each byte of a server that drips its
headers, so the transport is httpcore — httpx's own transport layer — with a network backend
that clamps each timeout to the deadline.
"""

from __future__ import annotations

import email.utils
import functools
import json
import random
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpcore

from densereward.core.errors import DenseRewardError

DEFAULT_MAX_BYTES = 1 << 20
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


class HTTPReplyError(DenseRewardError):
    """A request that gave no usable reply: the URL, the attempts made and what was wrong.

    ``status`` is the last HTTP status seen (``None`` when no status line arrived).
    """

    def __init__(self, url: str, problem: str, attempts: int, status: int | None = None) -> None:
        self.url = url
        self.problem = _one_line(problem)
        self.attempts = attempts
        self.status = status
        plural = "" if attempts == 1 else "s"
        super().__init__(f"{url}: {self.problem} after {attempts} attempt{plural}")


@dataclass(frozen=True)
class Reply:
    """A decoded JSON object and how it was obtained (for errors raised while reading it)."""

    url: str
    attempts: int
    body: dict[str, Any]

    def error(self, problem: str) -> HTTPReplyError:
        return HTTPReplyError(self.url, problem, self.attempts, 200)


@dataclass(frozen=True)
class JSONClient:
    """POSTs a JSON object and returns the JSON object the server answers, within a deadline.

    A call returns or raises :class:`HTTPReplyError` within ``deadline`` seconds (plus the time
    a DNS lookup takes, which no socket timeout bounds). Statuses 429, 500, 502, 503 and 504,
    refused or dropped connections and attempts that time out are retried, up to ``attempts``
    in all, after ``backoff * 2**(k-1)`` seconds (capped at ``max_backoff``, with jitter in
    ``[1/2, 1]`` of it so that many workers do not retry in step), or after the server's
    ``Retry-After`` when that is at most ``max_backoff``; a longer ``Retry-After`` ends the call.
    Other statuses and malformed replies are not retried: asking again gets the same answer.

    Each attempt opens its own connection (no keep-alive between calls), so a half-closed
    connection from a failed attempt is never reused. Proxies named by ``http_proxy`` /
    ``https_proxy`` are used unless ``no_proxy`` exempts the host, as urllib does.
    """

    timeout: float = 30.0
    """seconds one attempt may take in all: connect, send, headers and every chunk of the reply"""
    deadline: float = 120.0
    """seconds the whole call may take: every attempt and every wait between attempts"""
    max_bytes: int = DEFAULT_MAX_BYTES
    """largest reply body read; a longer one fails as soon as the bound is passed"""
    attempts: int = 4
    """most attempts per call, the first included"""
    backoff: float = 0.5
    """seconds before the second attempt; each later wait doubles it"""
    max_backoff: float = 8.0
    """longest wait between attempts, and the longest ``Retry-After`` honoured"""
    seed: int | None = None
    """seeds the jitter of the waits (``None``: fresh entropy)"""
    _random: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("timeout", "deadline"):
            if not getattr(self, name) > 0:
                raise ValueError(f"JSONClient.{name} must be positive, got {getattr(self, name)}")
        if self.attempts < 1 or self.max_bytes < 1:
            raise ValueError("JSONClient.attempts and max_bytes must be at least 1")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("JSONClient.backoff and max_backoff must not be negative")
        object.__setattr__(self, "_random", random.Random(self.seed))

    def post(self, url: str, payload: Any, headers: Mapping[str, str] | None = None) -> Reply:
        """The JSON object ``url`` answers to ``payload``, or :class:`HTTPReplyError`."""
        body = json.dumps(payload).encode()
        sent = [
            (b"Content-Type", b"application/json"),
            (b"Accept", b"application/json"),
            # No compression: the size bound is on the bytes read, and a compressed bomb
            # would pass it.
            (b"Accept-Encoding", b"identity"),
            *((k.encode(), v.encode()) for k, v in (headers or {}).items()),
        ]
        start = time.monotonic()
        end = start + self.deadline
        attempt = 0
        while True:
            attempt += 1
            began = time.monotonic()
            limit = min(self.timeout, end - began)
            retry_after: float | None = None
            status: int | None = None
            try:
                status, reply_headers, data = self._exchange(url, sent, body, began + limit)
            except httpcore.TimeoutException:
                problem = f"no complete reply within {limit:.3g} s"
            except httpcore.NetworkError as error:
                problem = f"connection failed: {_describe(error)}"
            except httpcore.RemoteProtocolError as error:
                problem = f"no valid HTTP reply: {_describe(error)}"
            except (httpcore.UnsupportedProtocol, httpcore.LocalProtocolError) as error:
                raise HTTPReplyError(url, f"cannot send: {_describe(error)}", attempt) from None
            except _TooLarge as error:
                raise HTTPReplyError(url, str(error), attempt, error.status) from None
            else:
                if 200 <= status < 300:
                    return Reply(url, attempt, _decode(url, data, attempt))
                problem = f"HTTP {status}" + (f" {_snippet(data)!r}" if data.strip() else "")
                if status not in RETRIED_STATUSES:
                    raise HTTPReplyError(url, problem, attempt, status)
                retry_after = _retry_after(reply_headers)
                if retry_after is not None and retry_after > self.max_backoff:
                    problem += f" with Retry-After {retry_after:g} s"
                    raise HTTPReplyError(url, problem, attempt, status)
            if attempt == self.attempts:
                raise HTTPReplyError(url, problem, attempt, status)
            wait = retry_after if retry_after is not None else self._wait(attempt)
            if time.monotonic() + wait >= end:
                problem += f", deadline of {self.deadline:g} s reached"
                raise HTTPReplyError(url, problem, attempt, status)
            time.sleep(wait)

    def _wait(self, attempt: int) -> float:
        delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return delay * (0.5 + 0.5 * self._random.random())

    def _exchange(
        self, url: str, headers: list[tuple[bytes, bytes]], body: bytes, deadline: float
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """One attempt: the status, headers and at most ``max_bytes`` of body, by ``deadline``."""
        timeouts = {phase: deadline - time.monotonic() for phase in ("connect", "read", "write")}
        timeouts["pool"] = timeouts["connect"]
        with (
            httpcore.ConnectionPool(
                ssl_context=_ssl_context(),
                proxy=_proxy(url),
                max_connections=1,
                max_keepalive_connections=0,
                network_backend=_DeadlineBackend(deadline),
            ) as pool,
            pool.stream(
                "POST", url, headers=headers, content=body, extensions={"timeout": timeouts}
            ) as response,
        ):
            declared = _content_length(response.headers)
            if declared is not None and declared > self.max_bytes:
                raise _TooLarge(self.max_bytes, response.status, f"Content-Length {declared}")
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_stream():
                size += len(chunk)
                if size > self.max_bytes:
                    raise _TooLarge(self.max_bytes, response.status)
                chunks.append(chunk)
            return response.status, response.headers, b"".join(chunks)


def chat_content(reply: Reply) -> str:
    """``choices[0].message.content`` of an OpenAI chat completion, checked to be a string.

    >>> chat_content(Reply("u", 1, {"choices": [{"message": {"content": "yes"}}]}))
    'yes'
    >>> chat_content(Reply("u", 1, {"choices": []}))
    Traceback (most recent call last):
    densereward.signals.http.HTTPReplyError: u: choices is an empty list after 1 attempt
    """
    choices = reply.body.get("choices")
    if not isinstance(choices, list):
        raise reply.error(f"choices is {_kind(choices)}, expected a list")
    if not choices:
        raise reply.error("choices is an empty list")
    path, value = "choices[0]", choices[0]
    for key in ("message", "content"):
        if not isinstance(value, dict):
            raise reply.error(f"{path} is {_kind(value)}, expected an object")
        path, value = f"{path}.{key}", value.get(key)
    if value is None:
        raise reply.error(f"{path} is null")
    if not isinstance(value, str):
        raise reply.error(f"{path} is {_kind(value)}, expected a string")
    return value


def ask_chat(
    client: JSONClient, base_url: str, payload: Mapping[str, Any], api_key: str | None = None
) -> str:
    """The text an OpenAI-compatible server at ``base_url`` completes ``payload`` with.

    ``payload`` is the body of ``POST {base_url}/chat/completions`` (``model``, ``messages``,
    sampling options); ``api_key``, when given, is sent as a bearer token.
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return chat_content(client.post(f"{base_url.rstrip('/')}/chat/completions", payload, headers))


class _TooLarge(Exception):
    def __init__(self, limit: int, status: int, detail: str = "") -> None:
        self.status = status
        super().__init__(f"reply larger than {limit} bytes" + (f" ({detail})" if detail else ""))


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every operation ends by ``deadline`` (``time.monotonic()``)."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(self._deadline, timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(self._deadline, timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        left = _left(self._deadline, timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._stream.start_tls(ssl_context, server_hostname, left), self._deadline
        )

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's socket backend, its streams bounded by one deadline."""

    def __init__(self, deadline: float) -> None:
        self._deadline = deadline
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        left = _left(self._deadline, timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, left, local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _left(deadline: float, timeout: float | None, expired: type[Exception]) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("deadline passed")
    return left if timeout is None else min(timeout, left)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Built once: loading the CA bundle costs more than a loopback request.
    return httpcore.default_ssl_context()


def _proxy(url: str) -> httpcore.Proxy | None:
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    address = proxies.get(parts.scheme)
    if not address or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    proxy = urllib.parse.urlsplit(address)
    auth = None
    if proxy.username is not None:
        auth = (urllib.parse.unquote(proxy.username), urllib.parse.unquote(proxy.password or ""))
    netloc = proxy.netloc.rpartition("@")[2]
    return httpcore.Proxy(urllib.parse.urlunsplit((proxy.scheme, netloc, "", "", "")), auth=auth)


def _decode(url: str, data: bytes, attempts: int) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        problem = f"reply is not valid UTF-8 (byte 0x{data[error.start]:02x} at {error.start})"
        raise HTTPReplyError(url, problem, attempts, 200) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        problem = f"reply is not JSON ({error.msg} at {error.pos}): {_snippet(data)!r}"
        raise HTTPReplyError(url, problem, attempts, 200) from None
    except RecursionError:
        raise HTTPReplyError(url, "reply is not JSON (nested too deeply)", attempts, 200) from None
    if not isinstance(value, dict):
        raise HTTPReplyError(url, f"reply is {_kind(value)}, expected an object", attempts, 200)
    return value


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _retry_after(headers: list[tuple[bytes, bytes]]) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (a number or an HTTP date), if any."""
    for name, value in headers:
        if name.lower() != b"retry-after":
            continue
        text = value.decode("latin-1").strip()
        try:
            return max(0.0, float(text))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _snippet(data: bytes, length: int = 80) -> str:
    return data[:length].decode("utf-8", errors="replace") + ("…" if len(data) > length else "")


def _describe(error: Exception) -> str:
    return str(error) or type(error).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())
