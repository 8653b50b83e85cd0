"""``densereward serve``: OpenRLHF's remote reward protocol over HTTP, on a recipe.

``POST /get_reward`` takes what OpenRLHF's ``SingleTurnAgentExecutor`` sends to
``--reward.remote_url``::

    {"query": [str], "prompts": [str], "labels": [any JSON]}      (labels may be left out)

``query[i]`` is the decoded prompt plus response (``adapters.openrlhf.split_queries``) and the
reply is OpenRLHF's, plus the dense rewards::

    {"rewards": [r_i], "scores": [r_i],
     "extra_logs": {"outcome": mean o_i, "process": mean p_i, "steps": mean n_i},
     "step_rewards": [[r_i1, ..., r_in]], "step_ends": [[e_i1, ..., e_in]]}

with ``r_i = o_i + p_i``, ``o_i`` the outcome function's grade, ``p_i = Σ_k r_ik`` the recipe's
step rewards and ``e_ik`` the character of the response where step ``k`` ends (exclusive).
``GET /health`` answers ``{"status": "ok", "recipe": name}``.

Every refusal is a status and one line, ``{"detail": "..."}``: 413 for a body over
``max_request_bytes``, 422 for a body that is not the request above (the field and index named),
400 for a densereward error while scoring (a query that does not start with its prompt, a
non-finite outcome), 500 for any other failure (the traceback goes to the server's log only).

The scorer is not thread-safe: it runs in one worker thread, and requests that arrive while it is
busy are joined into its next call (up to ``max_batch`` responses). OpenRLHF 0.11.2 sends one
sample per request, so joining is what keeps a reward model's forward passes batched
(``benchmarks/serve_throughput.py`` measures it against one scorer call per request).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pydantic
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from densereward.adapters.openrlhf import Job, Scored, score_jobs, split_queries, take_jobs
from densereward.adapters.text import TextScorer
from densereward.core.errors import ConfigError, DenseRewardError

logger = logging.getLogger("densereward.serve")


class RewardRequest(BaseModel):
    """OpenRLHF's request. Types are strict (a number is not a string); fields OpenRLHF may add
    later are ignored rather than refused, so a newer client still gets rewards."""

    model_config = ConfigDict(strict=True, extra="ignore")

    query: list[str]
    """prompt + response + end-of-sequence token, decoded with special tokens"""
    prompts: list[str]
    """the prompt each query starts with"""
    labels: list[Any] | None = None
    """anything the outcome function reads (a reference answer); ``None`` for each if left out"""


class RewardReply(BaseModel):
    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, float]
    step_rewards: list[list[float]]
    step_ends: list[list[int]]


class Refusal(Exception):
    """A request answered with ``status`` and one line."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Batcher:
    """Requests into scorer calls: one worker thread, requests that wait joined into one call.

    Runs on the event loop (no locks): ``submit`` queues a job and, if no drain is running, starts
    one; the drain takes queued jobs (at most ``max_batch`` responses) into each scorer call until
    the queue is empty. With ``join=False`` each request is its own call (serialised), the
    baseline the benchmark compares with.
    """

    def __init__(self, scorer: TextScorer, max_batch: int, join: bool = True) -> None:
        self.scorer = scorer
        self.max_batch = max_batch if join else 1
        self._queue: list[tuple[Job, asyncio.Future[Job]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="densereward-scorer")

    async def submit(self, job: Job) -> Scored:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Job] = loop.create_future()
        self._queue.append((job, future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        await future
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                jobs = take_jobs([job for job, _ in self._queue], self.max_batch)
                waiting, self._queue = self._queue[: len(jobs)], self._queue[len(jobs) :]
                await loop.run_in_executor(self._worker, score_jobs, self.scorer, jobs)
                for job, future in waiting:
                    if not future.done():  # a client that went away cancelled its future
                        future.set_result(job)
        finally:
            self._drainer = None

    def close(self) -> None:
        self._worker.shutdown(wait=True)


def refusing_app(title: str, description: str, close: Callable[[], None]) -> FastAPI:
    """A FastAPI app whose :class:`Refusal` becomes its status and ``{"detail": one line}``, and
    which calls ``close`` when it shuts down (the worker that owns the model or scorer)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        close()

    app = FastAPI(title=title, description=description, lifespan=lifespan)

    @app.exception_handler(Refusal)
    async def refused(request: Request, error: Refusal) -> JSONResponse:
        return JSONResponse({"detail": error.detail}, status_code=error.status)

    return app


def make_app(
    scorer: TextScorer,
    *,
    max_request_bytes: int = 1 << 20,
    max_batch: int = 1024,
    join: bool = True,
) -> FastAPI:
    """The FastAPI app serving ``scorer``: ``POST /get_reward`` and ``GET /health``.

    ``max_request_bytes`` bounds a request body (413 above it), ``max_batch`` the responses in
    one request (422 above it) and in one joined scorer call; ``join=False`` scores each request
    alone. The app does not own the scorer: ``serve`` closes it.
    """
    if max_request_bytes < 1:
        raise ConfigError("max_request_bytes", f"must be >= 1, got {max_request_bytes}")
    if max_batch < 1:
        raise ConfigError("max_batch", f"must be >= 1, got {max_batch}")
    batcher = Batcher(scorer, max_batch, join)
    app = refusing_app(
        "densereward",
        f"Step rewards of recipe '{scorer.recipe.name}' (OpenRLHF's protocol).",
        batcher.close,
    )

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "recipe": scorer.recipe.name}

    @app.post(
        "/get_reward",
        response_model=RewardReply,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": RewardRequest.model_json_schema()}},
            }
        },
    )
    async def get_reward(request: Request) -> dict[str, Any]:
        body = await read_body(request, max_request_bytes)
        parsed = parse_request(body, max_batch)
        labels = parsed.labels if parsed.labels is not None else [None] * len(parsed.query)
        try:
            responses = split_queries(parsed.query, parsed.prompts, scorer.tokenizer)
            scored = await batcher.submit(Job(parsed.prompts, responses, labels))
        except DenseRewardError as error:
            logger.warning("refused a request: %s", one_line(str(error)))
            raise Refusal(400, one_line(str(error))) from None
        except Exception as error:
            logger.exception("scoring failed")
            raise Refusal(
                500, one_line(f"scoring failed: {type(error).__name__}: {error}")
            ) from None
        return {
            "rewards": scored.totals,
            "scores": scored.totals,
            "extra_logs": scored.extra_logs(),
            "step_rewards": scored.steps,
            "step_ends": scored.step_ends,
        }

    return app


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (the declared
    ``Content-Length`` is checked before anything is read; a chunked body as it arrives)."""
    declared = request.headers.get("content-length", "")
    too_large = f"request body over the limit of {limit} bytes"
    if declared.isdigit() and int(declared) > limit:
        raise Refusal(413, f"{too_large} ({declared} declared)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refusal(413, too_large)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_request(body: bytes, max_batch: int) -> RewardRequest:
    """``body`` as a ``RewardRequest``, or a 422 naming the first bad field and index."""
    try:
        parsed = RewardRequest.model_validate_json(body)
    except pydantic.ValidationError as error:
        problems = error.errors(include_url=False, include_context=False)
        first = problems[0]
        where = "".join(
            f"[{part}]" if isinstance(part, int) else (f".{part}" if i else str(part))
            for i, part in enumerate(first["loc"])
        )
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        message = f"field '{where}': {first['msg']}" if where else f"body: {first['msg']}"
        raise Refusal(422, one_line(message + more)) from None
    count = len(parsed.query)
    if len(parsed.prompts) != count:
        raise Refusal(422, f"field 'prompts': {len(parsed.prompts)} prompts for {count} queries")
    if parsed.labels is not None and len(parsed.labels) != count:
        raise Refusal(422, f"field 'labels': {len(parsed.labels)} labels for {count} queries")
    if count > max_batch:
        raise Refusal(422, f"field 'query': {count} queries, at most {max_batch} per request")
    return parsed


def one_line(text: str) -> str:
    return " ".join(text.split())


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (``port=0``: any free port), or a ``ConfigError``."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ConfigError("--host", f"cannot resolve {host!r}: {error.strerror}") from None
    family, kind, protocol, _, address = infos[0]
    sock = socket.socket(family, kind, protocol)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise ConfigError("--port", f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(
    scorer: TextScorer,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    max_request_bytes: int = 1 << 20,
    max_batch: int = 1024,
    log_level: str = "info",
    on_ready: Callable[[str, int], None] | None = None,
) -> None:
    """Serve ``scorer`` with uvicorn until SIGINT or SIGTERM, then close it.

    Either signal shuts down gracefully (requests in flight are answered) and returns normally.
    uvicorn installs its own handlers while it runs and, once stopped, re-raises the signal it
    caught into the handlers it found: ours, installed first, which only ask it to stop (so a
    signal that comes before uvicorn's handlers are in place stops it too, and the re-raised one
    is harmless). ``on_ready(host, port)`` is called once the socket listens (``port=0`` picks a
    free port).
    """
    try:
        run_app(
            make_app(scorer, max_request_bytes=max_request_bytes, max_batch=max_batch),
            host,
            port,
            log_level,
            on_ready,
        )
    finally:
        scorer.close()


def run_app(
    app: FastAPI,
    host: str,
    port: int,
    log_level: str = "info",
    on_ready: Callable[[str, int], None] | None = None,
) -> None:
    """Run ``app`` with uvicorn on ``host:port`` until SIGINT or SIGTERM; both end it gracefully
    and return normally (see :func:`serve`). ``port=0`` picks a free port."""
    import uvicorn

    sock = bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on"))

    def stop(number: int, frame: Any) -> None:
        server.should_exit = True

    previous: dict[signal.Signals, Any] = {}
    try:
        with contextlib.suppress(ValueError):  # not the main thread: uvicorn skips signals too
            for number in (signal.SIGINT, signal.SIGTERM):
                previous[number] = signal.signal(number, stop)
        if on_ready is not None:
            on_ready(host, sock.getsockname()[1])
        server.run(sockets=[sock])
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        sock.close()


@contextlib.contextmanager
def serving(
    app: FastAPI,
    host: str = "127.0.0.1",
    port: int = 0,
    timeout_graceful_shutdown: int | None = 1,
) -> Iterator[str]:
    """``app`` served by uvicorn in a background thread on ``host:port`` (``port=0``: a free
    one) for the length of the ``with`` block; yields the base URL (``http://host:port``). For
    a judge or reward server beside a training run in the same process, and for tests."""
    import threading
    import time

    import uvicorn

    sock = bind(host, port)
    config = uvicorn.Config(
        app, log_level="warning", timeout_graceful_shutdown=timeout_graceful_shutdown
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="densereward-serving"
    )
    thread.start()
    deadline = time.monotonic() + 30
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"{host}:{port}", "the server did not start")
            time.sleep(0.02)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
