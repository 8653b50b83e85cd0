"""The annotator's HTTP path against a real loopback server that misbehaves on purpose.

The server is raw TCP (``socketserver``), not an HTTP framework, so that it can drip bytes, cut
a reply half-way or send bytes no framework would. Every failure must be one ``AnnotationError``
(``HTTPReplyError`` underneath) of one line that says what went wrong, and no failure may take
longer than its deadline: elapsed times are asserted only as generous upper bounds proving that
nothing waited for the server.
"""

from __future__ import annotations

import json
import socket
import socketserver
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from densereward import Trajectories
from densereward.signals import AIFeedback, OpenAIAnnotator, SignalContext
from densereward.signals.feedback import AnnotationError, Annotations, BackgroundWorkers
from densereward.signals.http import HTTPReplyError, JSONClient, ask_chat

Reply = Callable[[socket.socket, int, threading.Event], None]
ROOT = Path(__file__).resolve().parents[2]


class _Server(socketserver.ThreadingTCPServer):
    """A loopback server that reads each request, then lets ``reply`` write any bytes at all."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, reply: Reply) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.reply = reply
        self.requests: list[bytes] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()  # set at teardown: releases replies that hang or drip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        conn: socket.socket = self.request
        data = b""
        while b"\r\n\r\n" not in data:
            piece = conn.recv(65536)
            if not piece:
                return
            data += piece
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            0,
        )
        while len(body) < length:
            body += conn.recv(65536)
        with self.server.lock:
            self.server.requests.append(head + b"\r\n\r\n" + body)
            number = len(self.server.requests)
        try:
            self.server.reply(conn, number, self.server.stop)
        except OSError:  # the client gave up and closed: what most tests want
            pass


@contextmanager
def _serving(reply: Reply) -> Iterator[_Server]:
    server = _Server(reply)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()


def _response(status: int, body: bytes, *headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status} Status", f"Content-Length: {len(body)}", "Connection: close"]
    return ("\r\n".join([*lines, *headers]) + "\r\n\r\n").encode() + body


def _completion(content: object) -> bytes:
    return json.dumps({"choices": [{"message": {"content": content}}]}).encode()


def _always(data: bytes) -> Reply:
    def reply(conn: socket.socket, number: int, stop: threading.Event) -> None:
        conn.sendall(data)

    return reply


def _annotator(server: _Server, timeout: float = 5.0, attempts: int = 1) -> OpenAIAnnotator:
    return OpenAIAnnotator(
        server.url, "judge", "get the key", timeout=timeout, attempts=attempts, backoff=0.001
    )


def _fails(annotator: OpenAIAnnotator, *fragments: str) -> tuple[AnnotationError, float]:
    start = time.monotonic()
    with pytest.raises(AnnotationError) as caught:
        annotator.label(["You carry a key."])
    elapsed = time.monotonic() - start
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"annotator {annotator.base_url}")
    for fragment in fragments:
        assert fragment in message, message
    return caught.value, elapsed


def test_a_well_behaved_server_is_asked_the_chat_completions_protocol(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JUDGE_KEY", "secret")

    def reply(conn: socket.socket, number: int, stop: threading.Event) -> None:
        conn.sendall(_response(200, _completion(["Yes.", "no"][number - 1])))

    with _serving(reply) as server:
        annotator = OpenAIAnnotator(server.url, "judge", "get the key", api_key_env="JUDGE_KEY")
        assert annotator.label(["You carry a key.", "You see nothing."]) == [1, 0]
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1")
    assert b"Authorization: Bearer secret" in head
    sent = json.loads(body)
    assert sent["model"] == "judge" and "You carry a key." in sent["messages"][0]["content"]


@pytest.mark.parametrize("drip_headers", [False, True], ids=["body", "headers"])
def test_a_dripping_server_fails_at_the_deadline_not_when_the_reply_ends(
    drip_headers: bool,
) -> None:
    """One byte every 0.2 s never trips a per-read timeout; the reply would take 60 s."""
    data = _response(200, b" " * 300 + _completion("yes"))

    def reply(conn: socket.socket, number: int, stop: threading.Event) -> None:
        head_size = data.index(b"\r\n\r\n") + 4
        start = 0 if drip_headers else head_size
        conn.sendall(data[:start])
        for byte in data[start:]:
            conn.sendall(bytes([byte]))
            if stop.wait(0.2):
                return

    with _serving(reply) as server:
        _, elapsed = _fails(_annotator(server, timeout=1.0), "no complete reply within 1 s")
    assert elapsed < 10


@pytest.mark.parametrize(
    "cut",
    [b"HTTP/1.1 200 OK\r\nContent-Le", _response(200, _completion("yes"))[:-20], b""],
    ids=["mid-headers", "mid-body", "before-reply"],
)
def test_a_connection_closed_early_is_retried_then_reported(cut: bytes) -> None:
    with _serving(_always(cut)) as server:
        error, _ = _fails(_annotator(server, attempts=3), "no valid HTTP reply", "after 3 attempts")
    assert len(server.requests) == 3
    assert isinstance(error.__cause__, HTTPReplyError) and error.__cause__.status is None


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_a_retried_status_then_a_reply_succeeds(status: int) -> None:
    def reply(conn: socket.socket, number: int, stop: threading.Event) -> None:
        if number == 1:
            conn.sendall(_response(status, b"busy", "Retry-After: 0"))
        else:
            conn.sendall(_response(200, _completion("Yes, it does.")))

    with _serving(reply) as server:
        assert _annotator(server, attempts=3).label(["You carry a key."]) == [1]
    assert len(server.requests) == 2


def test_a_server_failing_forever_is_given_up_after_the_attempts() -> None:
    with _serving(_always(_response(500, b"internal error"))) as server:
        error, _ = _fails(
            _annotator(server, attempts=4), "HTTP 500 'internal error' after 4 attempts"
        )
    assert len(server.requests) == 4
    cause = error.__cause__
    assert isinstance(cause, HTTPReplyError) and (cause.status, cause.attempts) == (500, 4)


def test_the_deadline_bounds_all_attempts_together() -> None:
    client = JSONClient(timeout=5, deadline=0.5, attempts=1000, backoff=0.05, max_backoff=0.05)
    with _serving(_always(_response(503, b""))) as server:
        start = time.monotonic()
        # the last attempt either gets its 503 or runs out of time on the way: both are the
        # deadline ending the call, which is what is asserted
        with pytest.raises(HTTPReplyError, match=r", deadline of 0\.5 s reached after") as caught:
            ask_chat(client, server.url, {"model": "judge"})
    assert time.monotonic() - start < 5
    assert 1 < caught.value.attempts < 1000
    assert caught.value.attempts in (len(server.requests), len(server.requests) + 1)


def test_a_long_retry_after_ends_the_call_at_once() -> None:
    with _serving(_always(_response(429, b"", "Retry-After: 3600"))) as server:
        _fails(_annotator(server, attempts=4), "HTTP 429 with Retry-After 3600 s after 1 attempt")
    assert len(server.requests) == 1


def test_a_status_that_asking_again_cannot_fix_is_not_retried() -> None:
    with _serving(_always(_response(404, b'{"error": "no such model"}'))) as server:
        _fails(_annotator(server, attempts=4), "HTTP 404", "no such model", "after 1 attempt")
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"[1, 2]", "reply is a list, expected an object"),
        (b"null", "reply is null, expected an object"),
        (b'"yes"', "reply is a string, expected an object"),
        (b'{"choices": null}', "choices is null, expected a list"),
        (b'{"choices": []}', "choices is an empty list"),
        (b'{"choices": ["yes"]}', "choices[0] is a string, expected an object"),
        (b'{"choices": [{"message": null}]}', "choices[0].message is null, expected an object"),
        (_completion(None), "choices[0].message.content is null"),
        (_completion(1), "choices[0].message.content is a number, expected a string"),
        (b'{"choices": "\xff\xfe"}', "reply is not valid UTF-8 (byte 0xff at 13)"),
        (b"<html>\n502 Bad Gateway\n</html>", "reply is not JSON"),
        (b"[" * 200_000, "reply is not JSON (nested too deeply)"),
    ],
)
def test_a_malformed_reply_is_a_one_line_error_naming_what_is_wrong(
    body: bytes, problem: str
) -> None:
    with _serving(_always(_response(200, body))) as server:
        _fails(_annotator(server, attempts=4), f": {problem}", "after 1 attempt")
    assert len(server.requests) == 1  # asking again would get the same reply


def test_a_declared_huge_reply_fails_before_its_body_is_read() -> None:
    with _serving(_always(_response(200, b" " * 5_000_000))) as server:
        _fails(_annotator(server), "reply larger than 1048576 bytes (Content-Length 5000000)")


def test_an_endless_reply_fails_at_the_bound() -> None:
    """No Content-Length and no end: a client that read the whole reply would never return."""

    def reply(conn: socket.socket, number: int, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        while not stop.is_set():
            conn.sendall(b" " * 65536)

    with _serving(reply) as server:
        _, elapsed = _fails(_annotator(server), "reply larger than 1048576 bytes after 1 attempt")
    assert elapsed < 10


def test_an_answer_that_is_not_yes_or_no_names_the_caption() -> None:
    with _serving(_always(_response(200, _completion("Perhaps.\nIt depends.")))) as server:
        _fails(_annotator(server), "answer 'Perhaps.\\nIt depends.' for 'You carry a key.'")


def test_a_refused_connection_is_retried_then_reported() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    annotator = OpenAIAnnotator(
        f"http://127.0.0.1:{port}/v1", "judge", "task", attempts=2, backoff=0.001
    )
    _fails(annotator, "connection failed", "after 2 attempts")


def _batch() -> Trajectories:
    return Trajectories(torch.tensor([0, 2]), {"obs": torch.zeros((2, 3))})


def _key(observations: np.ndarray) -> list[str]:
    return ["You carry a key."] * len(observations)


def _failing_signal(server: _Server) -> Annotations:
    spec = AIFeedback(annotator="openai", base_url=server.url, attempts=2, timeout=5, deadline=10)
    return spec.bind(SignalContext(captions=_key))


def _until(condition: Callable[[], bool], within: float = 10.0) -> None:
    end = time.monotonic() + within
    while not condition():
        assert time.monotonic() < end, "the server never saw the request"
        time.sleep(0.01)


def test_an_error_met_in_the_background_is_raised_once_by_the_next_update() -> None:
    with _serving(_always(_response(500, b""))) as server:
        signal = _failing_signal(server)
        signal(_batch(), "bonus")
        _until(lambda: all(future.done() for _, future in signal.state["pending"]))
        with pytest.raises(AnnotationError, match="HTTP 500 after 2 attempts"):
            signal(_batch(), "bonus")
        signal(_batch(), "bonus")  # raised once; the caption is not asked again
        signal.close()
    assert len(server.requests) == 2


def test_close_raises_an_error_met_after_the_last_update() -> None:
    with _serving(_always(_response(500, b""))) as server:
        signal = _failing_signal(server)
        signal(_batch(), "bonus")  # the last update: the annotation is still in flight
        _until(lambda: len(server.requests) >= 1)
        with pytest.raises(AnnotationError, match="HTTP 500 after 2 attempts") as caught:
            signal.close()
        assert "\n" not in str(caught.value)
        signal.close()  # closing again does nothing
        with pytest.raises(AnnotationError, match=r"called after close\(\)"):
            signal(_batch(), "bonus")


def test_close_after_rules_annotations_returns_and_uses_daemon_threads() -> None:
    signal = AIFeedback(keywords=["key"]).bind(SignalContext(captions=_key))
    signal(_batch(), "bonus")
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("densereward-"))
    signal.close()
    assert signal.state["labels"] == {"You carry a key.": 1}


class _Stuck:
    """An annotator that ignores every deadline: it waits until the test releases it."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def label(self, captions: list[str]) -> list[int]:
        self.started.set()
        self.release.wait(30)
        return [0] * len(captions)


def test_close_reports_an_annotation_still_running_past_its_deadline() -> None:
    stuck = _Stuck()
    signal = Annotations(AIFeedback(deadline=0.05), _key, stuck, BackgroundWorkers(1))
    signal(_batch(), "bonus")
    assert stuck.started.wait(10)
    start = time.monotonic()
    try:
        with pytest.raises(AnnotationError, match="still being annotated"):
            signal.close()
        assert time.monotonic() - start < 10
    finally:
        stuck.release.set()


def _hang(conn: socket.socket, number: int, stop: threading.Event) -> None:
    stop.wait()


def test_a_process_exits_while_its_annotation_hangs() -> None:
    """The request's deadline is 60 s; the process must not wait for it when main returns."""
    script = textwrap.dedent(
        """
        import sys
        import torch
        from densereward import Trajectories
        from densereward.signals import AIFeedback, SignalContext

        spec = AIFeedback(annotator="openai", base_url=sys.argv[1], timeout=60, deadline=60)
        signal = spec.bind(SignalContext(captions=lambda obs: ["a key"] * len(obs)))
        signal(Trajectories(torch.tensor([0, 2]), {"obs": torch.zeros((2, 3))}), "bonus")
        sys.stdin.readline()
        """
    )
    with _serving(_hang) as server:
        process = subprocess.Popen(
            [sys.executable, "-c", script, server.url], stdin=subprocess.PIPE, cwd=ROOT
        )
        try:
            _until(lambda: len(server.requests) >= 1, within=120)  # imports may be slow
            assert process.stdin is not None
            process.stdin.write(b"\n")
            process.stdin.close()  # main returns while the request is in flight
            assert process.wait(timeout=20) == 0
        finally:
            process.kill()
            process.wait()
