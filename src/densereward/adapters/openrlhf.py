"""OpenRLHF's reward protocol on a recipe: the local ``reward_func`` file, and what the server shares.

OpenRLHF (0.11.2) asks for rewards after each generation with ``query = decode(prompt_ids +
response_ids, skip_special_tokens=False)``, the prompt and the label. Two transports carry that
request: a POST to ``--reward.remote_url`` (``densereward serve``, in ``adapters.server``) or a
Python file whose ``reward_func(queries, prompts, labels)`` OpenRLHF calls in a thread per
sample. The file needs two lines::

    from densereward.adapters.openrlhf import make_reward_func
    reward_func = make_reward_func("recipe.yaml", "tokenizer_dir", outcome="mymod:grade")

Each response's reward is ``outcome + Σ_k r_k`` over its steps ``k`` (``StepRewards.totals``):
the outcome function's grade plus the recipe's process rewards (one per step tag, then one for the
tail). OpenRLHF 0.11.2 trains on that one number per response; the server also returns the step
rewards for clients that can place them on tokens.

Requests are scored in batches: calls that arrive while the scorer is busy are joined into one
scorer call (at most ``max_batch`` responses), because a forward pass over 64 responses costs far
less than 64 passes over one. Responses to the same prompt within one request form a group
(``Trajectories.groups``), so group-wise transforms see the same pools whether a request is scored
alone or joined with others; a transform with batch-wide statistics (``normalize`` with
``scope: batch``) does see the joined batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densereward.adapters.text import OutcomeFunction, TextScorer
from densereward.core.errors import ConfigError, ValidationError
from densereward.pipeline import Recipe

RewardFunc = Callable[..., dict[str, Any]]
"""OpenRLHF's local form: ``reward_func(queries, prompts, labels, **kw) -> {"rewards": Tensor[B],
"scores": Tensor[B], "extra_logs": {name: Tensor[B]}}``."""


def split_queries(queries: Sequence[str], prompts: Sequence[str], tokenizer: Any) -> list[str]:
    """The response inside each OpenRLHF query: ``query[len(prompt):]``, trailing special tokens cut.

    OpenRLHF builds ``query = decode(prompt_ids + response_ids, skip_special_tokens=False)``, so a
    query starts with its prompt and ends with the end-of-sequence token when generation stopped
    on it (any trailing end-of-sequence or padding token strings are removed: the scorer appends
    its own). A tokenizer whose decoding does not give back the prompt's text exactly (spaces
    cleaned up, normalised) is handled by also trying ``decode(encode(prompt))``, which is what
    OpenRLHF put in the query. A query that starts with neither is an error naming its index.

    >>> from types import SimpleNamespace
    >>> tokenizer = SimpleNamespace(eos_token="</s>", pad_token="<pad>")
    >>> split_queries(["3+4=?3+4=7\\n#7</s><pad>"], ["3+4=?"], tokenizer)
    ['3+4=7\\n#7']
    """
    if len(queries) != len(prompts):
        raise ValidationError("prompts", f"{len(prompts)} prompts for {len(queries)} queries")
    endings = [
        token
        for token in dict.fromkeys((tokenizer.eos_token, tokenizer.pad_token))
        if isinstance(token, str) and token
    ]
    responses = []
    for index, (query, prompt) in enumerate(zip(queries, prompts, strict=True)):
        start = _prompt_end(query, prompt, tokenizer)
        if start is None:
            raise ValidationError(
                f"query[{index}]",
                f"does not start with prompts[{index}] (query begins {query[:40]!r}, "
                f"prompt begins {prompt[:40]!r})",
            )
        response = query[start:]
        stripped = True
        while stripped:
            stripped = False
            for token in endings:
                if response.endswith(token):
                    response = response[: -len(token)]
                    stripped = True
        responses.append(response)
    return responses


def _prompt_end(query: str, prompt: str, tokenizer: Any) -> int | None:
    if query.startswith(prompt):
        return len(prompt)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    decoded = tokenizer.decode(ids, skip_special_tokens=False)
    return len(decoded) if query.startswith(decoded) else None


# ----------------------------------------------------------------------------- batched scoring
@dataclass(frozen=True)
class Scored:
    """One request's rewards: per response the total (``outcome + Σ steps``), the outcome, the
    step rewards and the character in the response where each step ends (exclusive)."""

    totals: list[float]
    outcome: list[float]
    steps: list[list[float]]
    step_ends: list[list[int]]

    @staticmethod
    def empty() -> Scored:
        return Scored([], [], [], [])

    def extra_logs(self) -> dict[str, float]:
        """Means over the request's responses: ``outcome``, ``process`` (``Σ steps``) and
        ``steps`` (their number), as OpenRLHF logs them."""
        if not self.totals:
            return {"outcome": 0.0, "process": 0.0, "steps": 0.0}
        return {
            "outcome": float(np.mean(self.outcome)),
            "process": float(np.mean([sum(row) for row in self.steps])),
            "steps": float(np.mean([len(row) for row in self.steps])),
        }


@dataclass
class Job:
    """A request waiting to be scored: its texts, then either ``result`` or ``error``."""

    prompts: list[str]
    responses: list[str]
    labels: list[Any]
    result: Scored | None = None
    error: BaseException | None = None
    done: bool = field(default=False, compare=False)

    def __len__(self) -> int:
        return len(self.responses)


def take_jobs(pending: list[Job], max_batch: int) -> list[Job]:
    """Remove and return the first jobs of ``pending`` whose responses add up to at most
    ``max_batch`` (always at least one job, however large)."""
    count, size = 0, 0
    for job in pending:
        if count and size + len(job) > max_batch:
            break
        count, size = count + 1, size + len(job)
    taken = pending[:count]
    del pending[:count]
    return taken


def score_jobs(scorer: TextScorer, jobs: Sequence[Job]) -> None:
    """Score ``jobs`` in one scorer call and fill each one's ``result`` (or ``error``).

    Group ``g`` of response ``i`` is its (job, prompt) pair. When the joined call raises, every
    job is scored alone, so that one bad request fails alone and its error names its own index,
    not a position in the joined batch.
    """
    jobs = [job for job in jobs if not job.done]
    for job in jobs:
        if not len(job):
            job.result, job.done = Scored.empty(), True
    jobs = [job for job in jobs if not job.done]
    if not jobs:
        return
    try:
        results = _score_together(scorer, jobs)
    except Exception as error:  # a densereward error, the user's outcome function, a model
        if len(jobs) == 1:
            jobs[0].error, jobs[0].done = error, True
        else:
            for job in jobs:
                score_jobs(scorer, [job])
        return
    for job, result in zip(jobs, results, strict=True):
        job.result, job.done = result, True


def _score_together(scorer: TextScorer, jobs: Sequence[Job]) -> list[Scored]:
    prompts = [p for job in jobs for p in job.prompts]
    responses = [r for job in jobs for r in job.responses]
    labels = [label for job in jobs for label in job.labels]
    names: dict[tuple[int, str], int] = {}
    groups = [
        names.setdefault((index, prompt), len(names))
        for index, job in enumerate(jobs)
        for prompt in job.prompts
    ]
    scored = scorer(prompts, responses, labels, groups)
    totals = scored.totals
    bad = np.flatnonzero(~np.isfinite(totals))
    if len(bad):  # the pipeline checks its columns; this keeps NaN out of a JSON reply too
        raise ValidationError("rewards", f"{totals[bad[0]]} is not finite", trajectory=int(bad[0]))
    steps = scored.per_response()
    ends = [row.tolist() for row in np.split(scored.char_ends, scored.offsets[1:-1])]
    results, start = [], 0
    for job in jobs:
        stop = start + len(job)
        results.append(
            Scored(
                totals[start:stop].tolist(),
                scored.outcome[start:stop].tolist(),
                steps[start:stop],
                ends[start:stop],
            )
        )
        start = stop
    return results


class JoiningScorer:
    """A ``TextScorer`` safe to call from many threads: calls that wait join into one batch.

    Flat combining: a caller queues its job, then takes the scoring lock; if its job is still
    unscored, it scores every queued job (up to ``max_batch`` responses, its own first) in one
    scorer call. So the scorer runs in one thread at a time, and callers that arrived while it ran
    share the next call.
    """

    def __init__(self, scorer: TextScorer, max_batch: int = 1024) -> None:
        if max_batch < 1:
            raise ConfigError("max_batch", f"must be >= 1, got {max_batch}")
        self.scorer = scorer
        self.max_batch = max_batch
        self._scoring = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[Job] = []

    def __call__(self, prompts: list[str], responses: list[str], labels: list[Any]) -> Scored:
        job = Job(prompts, responses, labels)
        with self._queue_lock:
            self._queue.append(job)
        with self._scoring:
            if not job.done:
                with self._queue_lock:
                    self._queue.remove(job)
                    self._queue.insert(0, job)
                    jobs = take_jobs(self._queue, self.max_batch)
                score_jobs(self.scorer, jobs)
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result


# ----------------------------------------------------------------------------- local reward_func
def make_reward_func(
    recipe: str | Path | Recipe,
    tokenizer: str | Path | Any,
    *,
    models: Mapping[str, str | Path | Any] | None = None,
    outcome: str | OutcomeFunction | None = None,
    step_tag: str = "\n",
    max_batch: int = 1024,
) -> RewardFunc:
    """OpenRLHF's local ``reward_func(queries, prompts, labels, **kw)`` on a recipe.

    ``recipe`` is a YAML file (or a ``Recipe``), ``tokenizer`` a folder (or a tokenizer),
    ``models`` process-reward-model folders (or models) by the name the recipe's signals use,
    ``outcome`` an outcome function ``f(prompts, responses, labels) -> [B]`` or its import path
    ``"module:function"``. Everything loads now, so a bad path fails when OpenRLHF imports the
    file, not at the first reward.

    Returns ``{"rewards": r, "scores": r, "extra_logs": {"outcome": o, "process": p, "steps": n}}``
    with ``r = o + p`` per response (``Tensor[B]``, float32; ``p = Σ`` step rewards, ``n`` their
    number). OpenRLHF calls it from many threads at once (``asyncio.to_thread``, one sample per
    call); the calls are joined into batches (``JoiningScorer``).
    """
    scorer = TextScorer.from_files(
        recipe, tokenizer, models=models, outcome=outcome, step_tag=step_tag
    )
    joined = JoiningScorer(scorer, max_batch)

    def reward_func(
        queries: Sequence[str],
        prompts: Sequence[str],
        labels: Sequence[Any] | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        responses = split_queries(queries, prompts, scorer.tokenizer)
        labels = list(labels) if labels is not None else [None] * len(responses)
        if len(labels) != len(responses):
            raise ValidationError("labels", f"{len(labels)} labels for {len(responses)} queries")
        scored = joined(list(prompts), responses, labels)
        rewards = torch.tensor(scored.totals, dtype=torch.float32)
        return {
            "rewards": rewards,
            "scores": rewards.clone(),
            "extra_logs": {
                "outcome": torch.tensor(scored.outcome, dtype=torch.float32),
                "process": torch.tensor([sum(row) for row in scored.steps], dtype=torch.float32),
                "steps": torch.tensor([len(row) for row in scored.steps], dtype=torch.float32),
            },
        }

    reward_func.scorer = scorer  # type: ignore[attr-defined]
    return reward_func
