"""A real uvicorn server in a thread on a free loopback port, for tests of HTTP code."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from densereward.adapters.server import bind


@contextmanager
def running(app: Any, timeout_graceful_shutdown: int | None = 1) -> Iterator[str]:
    """``app`` served by uvicorn in a thread on a free loopback port; yields its base URL."""
    sock = bind("127.0.0.1", 0)
    config = uvicorn.Config(
        app, log_level="warning", timeout_graceful_shutdown=timeout_graceful_shutdown
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
