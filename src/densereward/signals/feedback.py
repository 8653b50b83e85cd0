"""Intrinsic rewards from asynchronous AI feedback (ONI, Zheng et al. 2024).

Observations are captioned in text; unique captions are sent to an annotator in the background
(rules here, or any OpenAI-compatible chat server through the same interface); the labels that
have come back are distilled into an intrinsic reward model — a hashing lookup, a classifier, or a
Bradley-Terry ranking model — and the intrinsic reward decays with the caption's visit count,
``r_int(s) = scale * m(s) / sqrt(N(caption(s)))``. Steps whose caption is not labelled yet get
the model's current estimate (0 for the lookup): annotation never blocks training.
"""

from __future__ import annotations

import concurrent.futures
import os
import queue
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
import torch
from torch import nn

from densereward.core.components import Needs, Signal, SignalContext
from densereward.core.errors import ConfigError, DenseRewardError
from densereward.core.parameters import Count, Positive, Real
from densereward.core.registry import register
from densereward.core.trajectories import Trajectories
from densereward.models.networks import make_encoder
from densereward.signals.functions import load_function
from densereward.signals.http import DEFAULT_MAX_BYTES, HTTPReplyError, JSONClient, ask_chat


class Annotator(Protocol):
    """Labels captions: 1 for a step towards the task, 0 otherwise."""

    def label(self, captions: Sequence[str]) -> list[int]: ...


@dataclass(frozen=True)
class RuleAnnotator:
    """Label 1 when a caption contains any of the keywords (case-insensitive)."""

    keywords: tuple[str, ...]

    def label(self, captions: Sequence[str]) -> list[int]:
        return [int(any(k.lower() in c.lower() for k in self.keywords)) for c in captions]


class AnnotationError(DenseRewardError):
    """An annotation that could not be made: the server failed, or its answer is not yes/no."""


@dataclass(frozen=True)
class OpenAIAnnotator:
    """Asks an OpenAI-compatible ``/chat/completions`` server whether each caption shows progress.

    The answer's first word is read: "yes" -> 1, "no" -> 0; anything else is an error naming the
    caption. The key comes from the environment variable ``api_key_env`` (optional for local
    servers). Each caption is one call of :class:`~densereward.signals.http.JSONClient`: it
    returns or fails within ``deadline`` seconds, retries included, so an annotation in the
    background always ends; every failure is an :class:`AnnotationError` of one line.
    """

    base_url: str
    model: str
    task: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 30.0
    """seconds one attempt may take in all (connect, send, and every chunk of the reply)"""
    deadline: float = 120.0
    """seconds one caption may take in all, every attempt and wait between attempts included"""
    max_bytes: int = DEFAULT_MAX_BYTES
    """largest reply read; a longer one is an error"""
    attempts: int = 4
    """most requests per caption: 429, 5xx, dropped connections and timeouts are retried"""
    backoff: float = 0.5
    """seconds before the first retry, doubled for each later one"""
    _client: JSONClient = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            client = JSONClient(
                timeout=self.timeout,
                deadline=self.deadline,
                max_bytes=self.max_bytes,
                attempts=self.attempts,
                backoff=self.backoff,
            )
        except ValueError as error:
            raise ConfigError("signals.ai_feedback", str(error)) from None
        object.__setattr__(self, "_client", client)

    def _ask(self, caption: str) -> int:
        prompt = (
            f"Task: {self.task}\nObservation: {caption}\n"
            "Does this observation show progress towards the task? Answer yes or no."
        )
        payload = {
            "model": self.model,
            "temperature": 0,
            "messages": [{"role": "user", "content": prompt}],
        }
        try:
            text = ask_chat(self._client, self.base_url, payload, os.environ.get(self.api_key_env))
        except HTTPReplyError as error:
            raise AnnotationError(f"annotator {error}") from error
        words = text.strip().lower().split()
        first = words[0].strip(".,!:") if words else ""
        if first not in ("yes", "no"):
            raise AnnotationError(
                f"annotator {self.base_url}: answer {text[:40]!r} for {caption[:40]!r} is not yes/no"
            )
        return int(first == "yes")

    def label(self, captions: Sequence[str]) -> list[int]:
        return [self._ask(c) for c in captions]


_T = TypeVar("_T")
_GRACE_S = 1.0  # what close() waits beyond a batch's deadline, for thread scheduling
_Job = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...]]


class BackgroundWorkers:
    """Runs calls on at most ``workers`` daemon threads, each call completing a ``Future``.

    Not a ``ThreadPoolExecutor``: its threads are joined when the interpreter exits, so one
    request that never ends keeps a finished run alive forever. Daemon threads are abandoned at
    exit instead, and a request in flight ends with the process. Threads start on demand, one per
    call until there are ``workers``, and end after :meth:`stop` or once this object is garbage
    collected (the threads hold only the queue, never the object).
    """

    def __init__(self, workers: int, name: str = "densereward-worker") -> None:
        if workers < 1:
            raise ValueError(f"BackgroundWorkers needs at least one worker, got {workers}")
        self._size = workers
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopped = False
        self._stop = weakref.finalize(self, _end_threads, self._jobs, self._threads)

    def submit(self, function: Callable[..., _T], *args: Any) -> Future[_T]:
        """``function(*args)`` run on a worker; its result or exception lands in the future."""
        future: Future[_T] = Future()
        with self._lock:
            if self._stopped:
                raise RuntimeError("BackgroundWorkers.submit after stop()")
            self._jobs.put((future, function, args))
            if len(self._threads) < self._size:
                thread = threading.Thread(
                    target=_work,
                    args=(self._jobs,),
                    name=f"{self._name}-{len(self._threads)}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)
        return future

    def stop(self) -> None:
        """Let each thread end once the queue before it is done (cancel futures to skip them)."""
        with self._lock:
            self._stopped = True
        self._stop()


def _work(jobs: queue.SimpleQueue[_Job | None]) -> None:
    while (job := jobs.get()) is not None:
        future, function, args = job
        del job
        if future.set_running_or_notify_cancel():
            try:
                result = function(*args)
            except BaseException as error:
                future.set_exception(error)
            else:
                future.set_result(result)
                del result
        # Hold nothing between jobs: the annotator and its futures belong to their owner.
        del future, function, args


def _end_threads(jobs: queue.SimpleQueue[_Job | None], threads: list[threading.Thread]) -> None:
    for _ in threads:
        jobs.put(None)


class _Scorer(nn.Module):
    def __init__(self, obs_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.encoder = make_encoder(obs_shape)
        self.head = nn.Linear(self.encoder.size, 1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(obs)).squeeze(-1)


@register(
    "signal",
    "ai_feedback",
    paper="Online Intrinsic Rewards from LLM Feedback (ONI, Zheng et al. 2024)",
)
@dataclass(frozen=True)
class AIFeedback(Signal):
    """Intrinsic reward distilled from asynchronous annotations of observation captions.

    Observations are captioned by ``caption`` (an import path ``"module:function"``), or, when
    it is not set, by the captioner the world offers. Annotations run on daemon threads; call
    :meth:`Annotations.close` on the bound signal when training ends, to raise an error that an
    annotation met after the last update.
    """

    caption: str | None = None
    """import path ``"module:function"`` of the captioner; ``None``: the world's own"""
    annotator: Literal["rules", "openai"] = "rules"
    """who labels captions: keyword rules, or an OpenAI-compatible chat server"""
    keywords: list[str] = field(default_factory=lambda: ["carry a key", "open door"])
    """the rules annotator labels 1 a caption that contains any of these"""
    task: str = "pick up the key, open the door and reach the goal"
    """the task the chat server is told, to judge progress towards"""
    base_url: str = "http://127.0.0.1:8000/v1"
    """the chat server's base URL (``/chat/completions`` is appended)"""
    model_name: str = "default"
    """the model the chat server is asked for"""
    reward_model: Literal["hashing", "classification", "ranking"] = "hashing"
    """how labels become a reward: lookup by caption, a classifier, or a Bradley-Terry model"""
    scale: Real = 0.05
    """the intrinsic reward of a labelled-positive state before decay"""
    decay: bool = True
    """divide the reward by the square root of the caption's visit count"""
    train_steps: Count = 20
    """gradient steps of a learned reward model per update"""
    examples_per_caption: Count = 64
    """distinct observations kept per caption to train a learned reward model"""
    workers: Count = 4
    """annotation batches in flight at once"""
    timeout: Positive = 30.0
    """seconds one request to the chat server may take in all, reply included"""
    deadline: Positive = 120.0
    """seconds one caption's annotation may take in all, retries included"""
    attempts: Count = 4
    """most requests per caption (429, 5xx, dropped connections and timeouts are retried)"""

    def __post_init__(self) -> None:
        if self.caption is not None:
            load_function(self.caption)  # a bad path fails when the recipe loads
        for name in ("timeout", "deadline"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"signals.ai_feedback.{name}", "must be positive")
        for name in ("attempts", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"signals.ai_feedback.{name}", "must be at least 1")

    def needs(self) -> Needs:
        return Needs(captions=self.caption is None)

    def bind(self, context: SignalContext) -> Annotations:
        if self.caption is not None:
            describe: Callable[[np.ndarray], list[str]] = load_function(self.caption)
        elif context.captions is not None:
            describe = context.captions
        else:
            raise ConfigError(
                "signals.ai_feedback.caption",
                "this world offers no captioner; name one ('module:function')",
            )
        annotator: Annotator = (
            RuleAnnotator(tuple(self.keywords))
            if self.annotator == "rules"
            else OpenAIAnnotator(
                self.base_url,
                self.model_name,
                self.task,
                timeout=self.timeout,
                deadline=self.deadline,
                attempts=self.attempts,
            )
        )
        torch.manual_seed(context.seed)
        workers = BackgroundWorkers(self.workers, name="densereward-annotator")
        return Annotations(self, describe, annotator, workers)


@dataclass
class Annotations:
    """``AIFeedback`` bound: captions sent, labels received, visit counts, examples per caption
    and the reward model distilled from them.

    Each call sends the captions never asked before to ``annotator`` as one batch on ``workers``
    and stores the labels of the batches that have come back since the last call; an error a
    batch met is raised by the next call, or by :meth:`close` once training is over.
    """

    spec: AIFeedback
    describe: Callable[[np.ndarray], list[str]]
    annotator: Annotator
    workers: BackgroundWorkers
    state: dict[str, Any] = field(
        default_factory=lambda: {
            "labels": {},
            "counts": {},
            "pending": [],
            "examples": {},
            "model": None,
            "asked": set(),
            "closed": False,
        }
    )

    def __call__(self, batch: Trajectories, name: str) -> Trajectories:
        if self.state["closed"]:
            raise AnnotationError("signals.ai_feedback: the signal was called after close()")
        obs = batch.step("obs").numpy()
        flat = obs.reshape(obs.shape[0], -1)
        _, first, inverse = np.unique(flat, axis=0, return_index=True, return_inverse=True)
        captions = self.describe(obs[first])
        labels, counts, examples = (
            self.state["labels"],
            self.state["counts"],
            self.state["examples"],
        )
        # `examples`: up to `examples_per_caption` distinct observations per caption, labelled by
        # their caption's label: the training set of the learned reward models.
        self._collect()
        fresh = [
            c for c in dict.fromkeys(captions) if c not in labels and c not in self.state["asked"]
        ]
        if fresh:
            self.state["asked"].update(fresh)
            self.state["pending"].append((fresh, self.workers.submit(self.annotator.label, fresh)))
        for caption, observation in zip(captions, obs[first], strict=True):
            kept = examples.setdefault(caption, [])
            if len(kept) < self.spec.examples_per_caption:
                kept.append(observation)
        for caption, visits in zip(
            *np.unique(np.array(captions)[inverse.reshape(-1)], return_counts=True), strict=True
        ):
            counts[caption] = counts.get(caption, 0) + int(visits)
        scores = self._scores(captions, obs[first])
        if self.spec.decay:
            scores = scores / np.sqrt(np.array([counts[c] for c in captions], dtype=np.float64))
        return batch.with_steps(
            **{name: torch.from_numpy(self.spec.scale * scores[inverse.reshape(-1)])}
        )

    def wait(self) -> None:
        """Block until every annotation sent so far has come back (for tests and evaluation);
        raise the first error one met."""
        concurrent.futures.wait([future for _, future in self.state["pending"]])
        self._collect()

    def close(self) -> None:
        """End annotation: wait for the batches in flight, raise the first error any batch met
        since the last call, and stop the workers.

        Call it once training is over. An annotation that fails after the last update has no
        later update to raise its error, which would be lost without this. Batches still queued
        (never sent) are cancelled: their labels could no longer be used. A batch in flight is
        waited for at most ``spec.deadline`` seconds per caption (the annotator's own bound),
        plus a second of grace; one still running then is an ``AnnotationError`` too. The
        worker threads end; calling the signal afterwards is an error, closing again does
        nothing.
        """
        if self.state["closed"]:
            return
        self.state["closed"] = True
        running = [(c, f) for c, f in self.state["pending"] if not f.cancel()]
        bound = self.spec.deadline * max((len(c) for c, _ in running), default=0) + _GRACE_S
        concurrent.futures.wait([f for _, f in running], timeout=bound)
        self.workers.stop()
        self._collect()
        if self.state["pending"]:
            captions = len(self.state["pending"][0][0])
            raise AnnotationError(
                f"signals.ai_feedback: a batch of {captions} captions is still being annotated "
                f"{bound:g} s after close(), past its deadline of {self.spec.deadline:g} s "
                "per caption"
            )

    def _collect(self) -> None:
        """Store the labels of the batches that have come back; raise the first error of one."""
        still: list[tuple[list[str], Future[list[int]]]] = []
        errors: list[BaseException] = []
        for captions, future in self.state["pending"]:
            if not future.done():
                still.append((captions, future))
            elif not future.cancelled():
                if (error := future.exception()) is not None:
                    errors.append(error)
                    continue
                for caption, label in zip(captions, future.result(), strict=True):
                    self.state["labels"][caption] = label
        # Done batches leave `pending` before an error is raised, so each error is raised once.
        self.state["pending"] = still
        if errors:
            raise errors[0]

    def _scores(self, captions: list[str], observations: np.ndarray) -> np.ndarray:
        labels = self.state["labels"]
        if self.spec.reward_model == "hashing":
            return np.array([float(labels.get(c, 0)) for c in captions])
        labelled = [c for c in labels if c in self.state["examples"]]
        if len({labels[c] for c in labelled}) < 2:
            return np.zeros(len(captions))
        model = self._fit(labelled)
        with torch.no_grad():
            return torch.sigmoid(model(torch.from_numpy(observations))).double().numpy()

    def _fit(self, labelled: list[str]) -> _Scorer:
        examples, labels = self.state["examples"], self.state["labels"]
        obs = torch.from_numpy(np.stack([o for c in labelled for o in examples[c]]))
        target = torch.tensor([float(labels[c]) for c in labelled for _ in examples[c]])
        if self.state["model"] is None:
            scorer = _Scorer(tuple(obs.shape[1:]))
            self.state["model"] = scorer
            self.state["optimizer"] = torch.optim.Adam(scorer.parameters(), lr=3e-3)
        model, optimizer = self.state["model"], self.state["optimizer"]
        positive, negative = obs[target == 1], obs[target == 0]
        generator = torch.Generator().manual_seed(len(labelled))
        for _ in range(self.spec.train_steps):
            if self.spec.reward_model == "classification":
                loss = nn.functional.binary_cross_entropy_with_logits(model(obs), target)
            else:  # Bradley-Terry: a labelled-positive state is preferred to a labelled-negative one
                i = torch.randint(0, positive.shape[0], (64,), generator=generator)
                j = torch.randint(0, negative.shape[0], (64,), generator=generator)
                loss = -nn.functional.logsigmoid(model(positive[i]) - model(negative[j])).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return model
