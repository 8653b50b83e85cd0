"""Intrinsic rewards from asynchronous AI feedback (ONI, Zheng et al. 2024).

Observations are captioned in text; unique captions are sent to an annotator in the background
(rules here, or any OpenAI-compatible chat server through the same interface); the labels that
have come back are distilled into an intrinsic reward model — a hashing lookup, a classifier, or a
Bradley-Terry ranking model — and the intrinsic reward decays with the caption's visit count,
``r_int(s) = scale * m(s) / sqrt(N(caption(s)))``. Steps whose caption is not labelled yet get
the model's current estimate (0 for the lookup): annotation never blocks training.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

from densereward.core.components import Needs, Signal, SignalContext
from densereward.core.errors import ConfigError, DenseRewardError
from densereward.core.registry import register
from densereward.core.trajectories import Trajectories
from densereward.models.networks import make_encoder
from densereward.signals.functions import load_function


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
    pass


@dataclass(frozen=True)
class OpenAIAnnotator:
    """Asks an OpenAI-compatible ``/chat/completions`` server whether each caption shows progress.

    The answer's first word is read: "yes" -> 1, "no" -> 0; anything else is an error naming the
    caption. The key comes from the environment variable ``api_key_env`` (optional for local
    servers).
    """

    base_url: str
    model: str
    task: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 30.0

    def _ask(self, caption: str) -> int:
        prompt = (
            f"Task: {self.task}\nObservation: {caption}\n"
            "Does this observation show progress towards the task? Answer yes or no."
        )
        body = json.dumps(
            {
                "model": self.model,
                "temperature": 0,
                "messages": [{"role": "user", "content": prompt}],
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if os.environ.get(self.api_key_env):
            headers["Authorization"] = f"Bearer {os.environ[self.api_key_env]}"
        request = urllib.request.Request(
            f"{self.base_url.rstrip('/')}/chat/completions", body, headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.load(response)
            text = reply["choices"][0]["message"]["content"]
        except (
            urllib.error.URLError,
            TimeoutError,
            KeyError,
            IndexError,
            json.JSONDecodeError,
        ) as error:
            raise AnnotationError(f"annotator {self.base_url}: {error}") from None
        words = text.strip().lower().split()
        first = words[0].strip(".,!:") if words else ""
        if first not in ("yes", "no"):
            raise AnnotationError(
                f"annotator {self.base_url}: answer {text[:40]!r} for {caption[:40]!r} is not yes/no"
            )
        return int(first == "yes")

    def label(self, captions: Sequence[str]) -> list[int]:
        return [self._ask(c) for c in captions]


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
    it is not set, by the captioner the world offers.
    """

    caption: str | None = None
    annotator: Literal["rules", "openai"] = "rules"
    keywords: list[str] = field(default_factory=lambda: ["carry a key", "open door"])
    task: str = "pick up the key, open the door and reach the goal"
    base_url: str = "http://127.0.0.1:8000/v1"
    model_name: str = "default"
    reward_model: Literal["hashing", "classification", "ranking"] = "hashing"
    scale: float = 0.05
    decay: bool = True
    train_steps: int = 20
    examples_per_caption: int = 64
    workers: int = 4

    def __post_init__(self) -> None:
        if self.caption is not None:
            load_function(self.caption)  # a bad path fails when the recipe loads

    def needs(self) -> Needs:
        return Needs(captions=self.caption is None)

    def bind(self, context: SignalContext) -> Annotations:
        if self.caption is not None:
            describe: Callable[[np.ndarray], list[str]] = load_function(self.caption)  # type: ignore[assignment]
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
            else OpenAIAnnotator(self.base_url, self.model_name, self.task)
        )
        torch.manual_seed(context.seed)
        return Annotations(self, describe, annotator, ThreadPoolExecutor(max_workers=self.workers))


@dataclass
class Annotations:
    """``AIFeedback`` bound: captions sent, labels received, visit counts, examples per caption
    and the reward model distilled from them."""

    spec: AIFeedback
    describe: Callable[[np.ndarray], list[str]]
    annotator: Annotator
    executor: ThreadPoolExecutor
    state: dict[str, Any] = field(
        default_factory=lambda: {
            "labels": {},
            "counts": {},
            "pending": [],
            "examples": {},
            "model": None,
            "asked": set(),
        }
    )

    def __call__(self, batch: Trajectories, name: str) -> Trajectories:
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
            self.state["pending"].append((fresh, self.executor.submit(self.annotator.label, fresh)))
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
        """Block until every annotation sent so far has come back (for tests and evaluation)."""
        for _, future in self.state["pending"]:
            future.result()
        self._collect()

    def _collect(self) -> None:
        still: list[tuple[list[str], Future]] = []
        for captions, future in self.state["pending"]:
            if future.done():
                for caption, label in zip(captions, future.result(), strict=True):
                    self.state["labels"][caption] = label
            else:
                still.append((captions, future))
        self.state["pending"] = still

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
