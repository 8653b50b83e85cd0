"""Step rewards from an LLM judge behind any OpenAI-compatible server, one signal per prompt family.

Every family asks through :class:`~densereward.signals.judge_client.JudgeClient` (concurrent,
retried, cached by the exact request), reads its prompt from a file a user can edit (the shipped
ones are in ``signals/prompts/``; a recipe's ``prompt:`` names another), and writes scores in
``[0, 1]`` — like a PRM's probability that a step is correct, so every transform that takes PRM
scores takes these. A reply that cannot be parsed is never scored as if it had said something:
it is counted under the signal's name (``JudgeClient.stats.parse_failures``), the step column
``{name}_parsed`` is 0 where a score rests on no parsed reply, and that score is the signal's
``unparsed`` value (by default 0.5, "no information"; ``fail_on_unparsed`` refuses instead).

The families (a trajectory's steps are its response split at the world's step tag, the untagged
tail — the answer — being the last step; trajectory scores sit on the last step, other steps 0):

- ``judge_critique`` — CAPO (Xie et al. 2025): one pass over the whole solution lists the
  incorrect steps; with ``samples = k`` critiques, step ``t`` scores
  ``s_t = 1 − (1/k') Σ_j 1[t ∈ E_j]`` over the ``k'`` parsed critiques ``E_j`` (CAPO's voting).
- ``judge_step`` — SLATE's dense LLM-as-judge (Truncated Step-Level Sampling): one request per
  step on the shared prefix ``(x, y_<t)``, ``s_t = P(yes | x, y_≤t)``, read from the first
  token's log-probabilities where the server gives them (the RewardDance / yes-no generative
  verifier reading: ``p_yes / (p_yes + p_no)``), else the share of sampled replies saying yes.
  Identical prefixes (a tree's shared steps) are asked once.
- ``judge_rubric`` — Rubric Reward Model (Curing Miracle Steps): the judge scores the trajectory
  against a rubric, ``r ∈ [0, 1]`` on the last step, and names unsupported ("miracle") steps,
  each of which scores ``−miracle_penalty``.
- ``judge_checklist`` — CM2: binary criteria, ``r = (1/C) Σ_c 1[item c satisfied]`` on the last
  step (sparse assignment, dense criteria); items from the prompt file's ``checklist`` section or
  per trajectory from ``text["checklist"]`` (one item per line).
- ``judge_pairwise`` — Writing-Zero's BRPO: in each group a response drawn at random is the
  temporary reference ``y_ref``; every other response scores ``r_i = P(y_i ≻ y_ref)`` (1 win,
  ½ tie, 0 loss, averaged over both presentation orders when ``both_orders``), the reference ½.
- ``judge_principles`` — SPCT (DeepSeek-GRM, Inference-Time Scaling for Generalist Reward
  Modeling): ``k`` sampled (principles, critique, score) replies in parallel,
  ``r = (1/k) Σ_j S_j / S_max`` (voting); with ``meta_keep = m`` a meta-judge rates each critique
  and only the ``m`` it trusts most vote.
- ``judge_tournament`` — ArenaRL: a seeded single-elimination tournament within each group
  (``O(G)`` comparisons instead of round-robin's ``O(G²)``); a response knocked out in round
  ``ρ`` of ``R = ⌈log₂ G⌉`` scores ``(ρ − 1) / R``, the champion 1.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from densereward.core.components import Needs, Signal, SignalContext, TextFormat
from densereward.core.errors import ConfigError, ValidationError
from densereward.core.parameters import Count, NonNegative, NonNegativeCount, Positive, Unit
from densereward.core.registry import register
from densereward.core.trajectories import GROUP, Trajectories
from densereward.signals.judge_client import ChatRequest, JudgeClient, JudgeReply

PARSED = "{name}_parsed"
YES_WORDS = frozenset({"yes", "correct", "true"})
NO_WORDS = frozenset({"no", "incorrect", "false", "wrong"})


# ----------------------------------------------------------------------------- prompt files
@dataclass(frozen=True)
class PromptFile:
    """A judge prompt: named sections of text with ``{placeholders}``, read from ``path``.

    The file is plain text; a line ``## name`` starts section ``name`` and everything before the
    first one is a description for the reader. ``system`` and ``user`` are the chat messages;
    families name their other sections (``checklist``, ``rubric``, ``meta``).
    """

    path: str
    sections: Mapping[str, str]
    lines: Mapping[str, int]
    """each section's first line in the file, for error messages"""

    def render(self, section: str, **values: str) -> str:
        return self.sections[section].format(**values)

    def messages(self, **values: str) -> tuple[tuple[str, str], ...]:
        """The ``system`` (if any) and ``user`` messages, filled in."""
        pairs = [("system", self.render("system", **values))] if "system" in self else []
        return (*pairs, ("user", self.render("user", **values)))

    def items(self, section: str) -> list[str]:
        """The ``- item`` lines of a list section (a checklist)."""
        return [
            line.strip()[1:].strip()
            for line in self.sections[section].splitlines()
            if line.strip().startswith(("-", "*"))
        ]

    def __contains__(self, section: object) -> bool:
        return section in self.sections


def read_prompt(
    path: str | Path, allowed: Mapping[str, frozenset[str]], required: Sequence[str]
) -> PromptFile:
    """The prompt file at ``path``, checked: only sections in ``allowed``, each using only its
    allowed placeholders, every ``required`` section present; else a one-line ``ConfigError``
    naming the file and line."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(where, f"cannot read the prompt file: {error}") from None
    sections: dict[str, list[str]] = {}
    lines: dict[str, int] = {}
    current: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("## "):
            current = line[3:].strip()
            if current not in allowed:
                known = ", ".join(sorted(allowed))
                raise ConfigError(
                    f"{where}:{number}", f"unknown section {current!r} (known: {known})"
                )
            if current in sections:
                raise ConfigError(f"{where}:{number}", f"section {current!r} appears twice")
            sections[current], lines[current] = [], number
        elif current is not None:
            sections[current].append(line)
    for name in required:
        if name not in sections:
            raise ConfigError(where, f"has no '## {name}' section")
    joined = {name: "\n".join(body).strip("\n") for name, body in sections.items()}
    for name, body in joined.items():
        # the line before the section's first non-blank line, for locating its errors
        start = lines[name] + next((k for k, ln in enumerate(sections[name]) if ln.strip()), 0)
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(body) if f is not None]
        except ValueError as error:
            bad = next(
                (k for k, ln in enumerate(body.splitlines()) if not _formats(ln)),
                0,
            )
            raise ConfigError(f"{where}:{start + 1 + bad}", f"section {name!r}: {error}") from None
        for placeholder in fields:
            if placeholder not in allowed[name]:
                offset = next(
                    (i for i, ln in enumerate(body.splitlines()) if f"{{{placeholder}" in ln), 0
                )
                known = ", ".join("{" + f + "}" for f in sorted(allowed[name])) or "none"
                raise ConfigError(
                    f"{where}:{start + 1 + offset}",
                    f"section {name!r} uses unknown placeholder {{{placeholder}}} (known: {known})",
                )
    return PromptFile(where, joined, lines)


def _formats(line: str) -> bool:
    try:
        list(string.Formatter().parse(line))
    except ValueError:
        return False
    return True


def shipped_prompt(name: str) -> Path:
    """The prompt file shipped for family ``name`` (``signals/prompts/{name}.md``)."""
    return Path(str(resources.files("densereward.signals") / "prompts" / f"{name}.md"))


# ----------------------------------------------------------------------------- reply parsing
def parse_verdict(text: str) -> float | None:
    """1.0 for a reply whose first word says yes (``yes``/``correct``/``true``), 0.0 for no,
    ``None`` otherwise.

    >>> parse_verdict("Yes, the step holds."), parse_verdict(" no"), parse_verdict("maybe")
    (1.0, 0.0, None)
    """
    match = re.match(r"\W*([A-Za-z]+)", text)
    word = match.group(1).lower() if match else ""
    return 1.0 if word in YES_WORDS else 0.0 if word in NO_WORDS else None


def yes_probability(reply: JudgeReply, choice: int = 0) -> float | None:
    """``p_yes / (p_yes + p_no)`` from the first generated token's top log-probabilities (each
    side summing the tokens that spell ``yes`` or ``no``, ignoring case and spaces), or ``None`` when the reply
    has no log-probabilities or neither word is among them."""
    if reply.logprobs is None or not reply.logprobs[choice]:
        return None
    first = reply.logprobs[choice][0]
    candidates = dict(first.top) if first.top else {}
    candidates.setdefault(first.token, first.logprob)
    # only the words themselves: a token like "correct" may begin "correct? no"
    yes = sum(math.exp(lp) for tok, lp in candidates.items() if tok.strip().lower() == "yes")
    no = sum(math.exp(lp) for tok, lp in candidates.items() if tok.strip().lower() == "no")
    return yes / (yes + no) if yes + no > 0 else None


def parse_step_list(text: str, steps: int) -> list[int] | None:
    """The 1-based step numbers after ``Incorrect steps:`` (``none`` is the empty list), or
    ``None`` when the line is missing or names a step outside ``1..steps``.

    >>> parse_step_list("Step 2 divides by zero.\\nIncorrect steps: 2, 3", 4)
    [2, 3]
    >>> parse_step_list("Incorrect steps: none", 4), parse_step_list("Incorrect steps: 5", 4)
    ([], None)
    """
    return _step_list(r"incorrect steps?", text, steps)


def _step_list(label: str, text: str, steps: int) -> list[int] | None:
    matches = re.findall(rf"(?im)^[\s*#>-]*{label}\s*:\s*(.*)$", text)
    if not matches:
        return None
    value = matches[-1].strip().rstrip(".").strip()
    if value.lower() in {"none", "no", "-", ""}:
        return []
    numbers = re.findall(r"\d+", value)
    if not numbers or re.sub(r"[\d\s,;and&]|step", "", value, flags=re.I):
        return None
    chosen = sorted({int(n) for n in numbers})
    return chosen if all(1 <= n <= steps for n in chosen) else None


def parse_score(text: str, maximum: float) -> float | None:
    """``Score: x`` (or ``x/maximum``) as ``x / maximum`` in ``[0, 1]``; ``None`` when missing or
    out of range.

    >>> parse_score("clear and correct. Score: 8/10", 10.0), parse_score("Score: 11", 10.0)
    (0.8, None)
    """
    matches = re.findall(r"(?i)score\s*[:=]\s*(-?\d+(?:\.\d+)?)(?:\s*/\s*(\d+(?:\.\d+)?))?", text)
    if not matches:
        return None
    value, over = matches[-1]
    scale = float(over) if over else maximum
    score = float(value) / scale if scale > 0 else -1.0
    return score if 0.0 <= score <= 1.0 else None


def parse_winner(text: str) -> float | None:
    """``Winner: A`` → 1.0, ``B`` → 0.0, ``tie`` → 0.5 (the probability that A is preferred);
    ``None`` otherwise.

    >>> parse_winner("A is clearer.\\nWinner: A"), parse_winner("winner: tie"), parse_winner("A")
    (1.0, 0.5, None)
    """
    matches = re.findall(r"(?im)winner\s*:\s*\**\s*(A|B|tie)\b", text)
    if not matches:
        return None
    last = matches[-1].lower()
    return {"a": 1.0, "b": 0.0, "tie": 0.5}[last]


def parse_checklist(text: str, items: int) -> list[float] | None:
    """``1: yes`` … ``C: no`` lines as 1/0 per item, or ``None`` unless every item is answered.

    >>> parse_checklist("1: yes\\n2) no\\n3. Yes", 3)
    [1.0, 0.0, 1.0]
    """
    answers: dict[int, float] = {}
    for number, word in re.findall(r"(?im)^\W*(\d+)\s*[:.)-]\s*\**\s*([A-Za-z]+)", text):
        verdict = parse_verdict(word)
        if verdict is not None:
            answers[int(number)] = verdict
    if sorted(answers) != list(range(1, items + 1)):
        return None
    return [answers[i] for i in range(1, items + 1)]


# ----------------------------------------------------------------------------- the texts
@dataclass(frozen=True)
class JudgedBatch:
    """What a judge reads of a batch: per trajectory the problem, its step texts and (when the
    world gives one) the reference answer; ``last`` is each trajectory's last step index."""

    problems: list[str]
    steps: list[list[str]]
    references: list[str] | None
    starts: np.ndarray
    last: np.ndarray
    text: Mapping[str, Sequence[str]]
    """all of the batch's per-trajectory texts"""
    groups: np.ndarray | None = None
    """each trajectory's group label, when the batch has groups"""

    def solution(self, i: int) -> str:
        return "\n".join(f"Step {t + 1}: {s}" for t, s in enumerate(self.steps[i]))

    def subset(self, index: np.ndarray) -> JudgedBatch:
        """The trajectories ``index``; ``starts`` and ``last`` still index the whole batch's
        steps, so scores land where they belong."""
        pick = [int(i) for i in index]
        return JudgedBatch(
            [self.problems[i] for i in pick],
            [self.steps[i] for i in pick],
            None if self.references is None else [self.references[i] for i in pick],
            self.starts[index],
            self.last[index],
            {name: [values[i] for i in pick] for name, values in self.text.items()},
            None if self.groups is None else self.groups[index],
        )


def judged_batch(batch: Trajectories, step_tag: str) -> JudgedBatch:
    """The texts of ``batch``: ``text["prompt"]`` and ``text["response"]`` split at ``step_tag``
    into exactly the batch's steps (the untagged tail is the last one)."""
    for name in ("prompt", "response"):
        if name not in batch.text:
            raise ValidationError(f"text.{name}", "a judge reads the prompt and response texts")
    lengths = batch.lengths.numpy()
    steps = []
    for i, (response, length) in enumerate(zip(batch.text["response"], lengths, strict=True)):
        pieces = response.split(step_tag)
        if len(pieces) == length + 1 and not pieces[-1]:
            pieces = pieces[:-1]
        if len(pieces) != length:
            raise ValidationError(
                "text.response",
                f"trajectory {i} has {length} steps but its response has {len(pieces)} pieces "
                f"split at {step_tag!r}",
            )
        steps.append(pieces)
    starts = batch.offsets[:-1].numpy()
    references = list(batch.text["answer"]) if "answer" in batch.text else None
    groups = batch.episode(GROUP).numpy() if GROUP in batch.episodes else None
    return JudgedBatch(
        list(batch.text["prompt"]),
        steps,
        references,
        starts,
        starts + lengths - 1,
        batch.text,
        groups,
    )


def has_content(texts: JudgedBatch, answer_mark: str) -> np.ndarray:
    """Which trajectories are worth asking a judge about: a step before the answer holds a
    letter or digit, and the last step holds the answer mark followed by an answer. Content-free
    "master keys" (``:``, ``Thought process:``, an empty response) and solutions cut short
    (no answer) fail it."""
    keep = np.zeros(len(texts.steps), dtype=bool)
    for i, steps in enumerate(texts.steps):
        body, mark, answer = steps[-1].rpartition(answer_mark)
        reasoning = [*steps[:-1], body] if mark else steps
        keep[i] = bool(mark and answer.strip()) and any(
            any(c.isalnum() for c in step) for step in reasoning
        )
    return keep


# ----------------------------------------------------------------------------- the signals
@dataclass(frozen=True)
class JudgeSignal(Signal):
    """What every judge family shares: the server, the client's bounds, the prompt file, the
    sampling, and what an unparsed reply scores."""

    family: ClassVar[str]
    sections: ClassVar[Mapping[str, frozenset[str]]]
    required: ClassVar[tuple[str, ...]] = ("user",)

    base_url: str = "http://127.0.0.1:8000/v1"
    """the server's OpenAI-compatible root (ending in ``/v1``)"""
    judge: str = "judge"
    """the model name the server serves"""
    prompt: str | None = None
    """the prompt file; ``None``: the one shipped for this family"""
    cache: str | None = None
    """SQLite file of past replies (a rerun asks nothing twice); ``None``: no cache"""
    samples: Count = 1
    """replies per request (``n``)"""
    temperature: NonNegative = 0.0
    max_tokens: Count = 64
    seed: NonNegativeCount | None = 0
    """sent with every request (sampled replies repeat on a rerun)"""
    concurrency: Count = 8
    timeout: Positive = 60.0
    """seconds one attempt may take"""
    retries: NonNegativeCount = 3
    unparsed: Unit = 0.5
    """the score of a step whose replies could not be parsed (marked 0 in ``{name}_parsed``)"""
    fail_on_unparsed: bool = False
    """refuse the batch instead when any reply cannot be parsed"""
    prefilter: bool = False
    """score 0, without asking, every trajectory that fails :func:`has_content` (a hardening
    against content-free responses that fool judges)"""

    def needs(self) -> Needs:
        return Needs(text=True)

    def bind(self, context: SignalContext) -> BoundJudge:
        if context.text_format is None:
            raise ConfigError(f"signals.{self.family}", "needs the world's text format")
        prompt = read_prompt(
            self.prompt if self.prompt is not None else shipped_prompt(self.family),
            self.sections,
            self.required,
        )
        client = JudgeClient(
            self.base_url,
            self.judge,
            cache=self.cache,
            concurrency=self.concurrency,
            timeout=self.timeout,
            retries=self.retries,
        )
        return BoundJudge(
            self, prompt, client, context.text_format, np.random.default_rng(context.seed)
        )

    def request(self, messages: tuple[tuple[str, str], ...], **fields: Any) -> ChatRequest:
        options: dict[str, Any] = {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "n": self.samples,
            "seed": self.seed,
        }
        options.update(fields)
        return ChatRequest(messages, **options)

    def score(self, bound: BoundJudge, texts: JudgedBatch, scores: Scores) -> None:
        """Fills ``scores`` for the batch (``bound.ask`` sends requests)."""
        raise NotImplementedError


@dataclass
class Scores:
    """A family's output under construction: step values and whether each rests on a parse."""

    values: np.ndarray
    parsed: np.ndarray
    failures: int = 0

    @classmethod
    def empty(cls, steps: int) -> Scores:
        return cls(np.zeros(steps), np.ones(steps))

    def unparsed(self, steps: np.ndarray | int, value: float) -> None:
        self.values[steps] = value
        self.parsed[steps] = 0.0


@dataclass
class BoundJudge:
    """A judge family bound: its prompt, its client, the step tag and a seeded generator (the
    random references and brackets repeat on a rerun, so its requests hit the cache)."""

    signal: JudgeSignal
    prompt: PromptFile
    client: JudgeClient
    text_format: TextFormat
    rng: np.random.Generator

    def __call__(self, batch: Trajectories, name: str) -> Trajectories:
        texts = judged_batch(batch, self.text_format.step_tag)
        scores = Scores.empty(batch.num_steps)
        if self.signal.prefilter:
            keep = has_content(texts, self.text_format.answer_mark)
            texts = texts.subset(np.flatnonzero(keep))
        if texts.steps:
            self.signal.score(self, texts, scores)
        if scores.failures:
            for _ in range(scores.failures):
                self.client.count_parse_failure(name)
            if self.signal.fail_on_unparsed:
                raise ValidationError(
                    f"signals.{name}",
                    f"{scores.failures} judge replies could not be parsed "
                    f"(prompt {self.prompt.path}); fail_on_unparsed is set",
                )
        return batch.with_steps(
            **{
                name: torch.from_numpy(scores.values),
                PARSED.format(name=name): torch.from_numpy(scores.parsed),
            }
        )

    def ask(self, requests: Sequence[ChatRequest]) -> list[JudgeReply]:
        return self.client.ask(requests)

    def values(self, texts: JudgedBatch, i: int, **extra: str) -> dict[str, str]:
        return placeholders(texts, i, **extra)

    def close(self) -> None:
        self.client.close()


def placeholders(texts: JudgedBatch, i: int, **extra: str) -> dict[str, str]:
    """The placeholders every family can fill for trajectory ``i``."""
    values = {
        "problem": texts.problems[i],
        "steps": texts.solution(i),
        "count": str(len(texts.steps[i])),
        "reference": texts.references[i] if texts.references is not None else "",
    }
    values.update(extra)
    return values


def step_messages(
    prompt: PromptFile, texts: JudgedBatch
) -> tuple[list[tuple[tuple[str, str], ...]], np.ndarray]:
    """``judge_step``'s conversations, one per step (its problem, the steps before it, the step),
    and each one's step index in the batch; what a generative verifier is trained on too."""
    messages, where = [], []
    for i, steps in enumerate(texts.steps):
        for t, step in enumerate(steps):
            previous = "\n".join(f"Step {k + 1}: {s}" for k, s in enumerate(steps[:t]))
            values = placeholders(texts, i, previous=previous, step=step, index=str(t + 1))
            messages.append(prompt.messages(**values))
            where.append(texts.starts[i] + t)
    return messages, np.asarray(where, dtype=np.int64)


def _uses_reference(prompt: PromptFile, texts: JudgedBatch) -> None:
    if texts.references is None and any("{reference}" in body for body in prompt.sections.values()):
        raise ValidationError("text.answer", f"{prompt.path} asks for {{reference}}")


TRAJECTORY = frozenset({"problem", "steps", "count", "reference"})
PAIR = frozenset({"problem", "a", "b", "reference"})


@register("signal", "judge_critique", paper="CAPO (Xie et al. 2025)")
@dataclass(frozen=True)
class CritiqueJudge(JudgeSignal):
    """One-pass critique of the whole solution: ``s_t = 1 − share of parsed critiques that list
    step t`` (CAPO's generative PRM with voting over ``samples`` critiques)."""

    family: ClassVar[str] = "judge_critique"
    sections: ClassVar[Mapping[str, frozenset[str]]] = {"system": TRAJECTORY, "user": TRAJECTORY}
    max_tokens: Count = 256

    def score(self, bound: BoundJudge, texts: JudgedBatch, scores: Scores) -> None:
        _uses_reference(bound.prompt, texts)
        requests = [
            self.request(bound.prompt.messages(**bound.values(texts, i)))
            for i in range(len(texts.steps))
        ]
        for i, reply in enumerate(bound.ask(requests)):
            count = len(texts.steps[i])
            flagged = np.zeros(count)
            parsed = 0
            for text in reply.texts:
                listed = parse_step_list(text, count)
                if listed is None:
                    scores.failures += 1
                    continue
                parsed += 1
                flagged[np.asarray(listed, dtype=np.int64) - 1] += 1
            span = np.arange(texts.starts[i], texts.starts[i] + count)
            if parsed == 0:
                scores.unparsed(span, self.unparsed)
            else:
                scores.values[span] = 1.0 - flagged / parsed


@register("signal", "judge_step", paper="SLATE (Truncated Step-Level Sampling, 2025)")
@dataclass(frozen=True)
class StepJudge(JudgeSignal):
    """Per-step judging on shared prefixes: ``s_t = P(yes | x, y_≤t)`` — from the first token's
    log-probabilities when ``logprobs`` (and the server gives them), else the share of the
    ``samples`` replies whose first word is yes."""

    family: ClassVar[str] = "judge_step"
    step_fields: ClassVar[frozenset[str]] = frozenset(
        {"problem", "previous", "step", "index", "reference"}
    )
    sections: ClassVar[Mapping[str, frozenset[str]]] = {"system": step_fields, "user": step_fields}
    max_tokens: Count = 4
    logprobs: bool = True
    top_logprobs: Count = 5

    def score(self, bound: BoundJudge, texts: JudgedBatch, scores: Scores) -> None:
        _uses_reference(bound.prompt, texts)
        fields = {"logprobs": True, "top_logprobs": self.top_logprobs} if self.logprobs else {}
        conversations, where = step_messages(bound.prompt, texts)
        requests = [self.request(messages, **fields) for messages in conversations]
        for step, reply in zip(where, bound.ask(requests), strict=True):
            readings = []
            for choice, text in enumerate(reply.texts):
                reading = yes_probability(reply, choice) if self.logprobs else None
                if reading is None:
                    reading = parse_verdict(text)
                if reading is None:
                    scores.failures += 1
                else:
                    readings.append(reading)
            if readings:
                scores.values[step] = float(np.mean(readings))
            else:
                scores.unparsed(step, self.unparsed)


@register("signal", "judge_rubric", paper="Curing Miracle Steps (Rubric Reward Model, 2025)")
@dataclass(frozen=True)
class RubricJudge(JudgeSignal):
    """The rubric score ``r = S / S_max`` on the last step, and ``−miracle_penalty`` on every
    step the judge names as unsupported (a jump to a result nothing before it derives)."""

    family: ClassVar[str] = "judge_rubric"
    rubric_fields: ClassVar[frozenset[str]] = TRAJECTORY | {"rubric"}
    sections: ClassVar[Mapping[str, frozenset[str]]] = {
        "system": rubric_fields,
        "user": rubric_fields,
        "rubric": frozenset(),
    }
    required: ClassVar[tuple[str, ...]] = ("user", "rubric")
    max_tokens: Count = 256
    max_score: Positive = 10.0
    miracle_penalty: NonNegative = 1.0

    def score(self, bound: BoundJudge, texts: JudgedBatch, scores: Scores) -> None:
        _uses_reference(bound.prompt, texts)
        rubric = bound.prompt.sections["rubric"]
        requests = [
            self.request(bound.prompt.messages(**bound.values(texts, i, rubric=rubric)))
            for i in range(len(texts.steps))
        ]
        for i, reply in enumerate(bound.ask(requests)):
            count = len(texts.steps[i])
            totals, miracles = [], np.zeros(count)
            for text in reply.texts:
                total = parse_score(text, self.max_score)
                unsupported = _step_list(r"unsupported steps?", text, count)
                if total is None or unsupported is None:
                    scores.failures += 1
                    continue
                totals.append(total)
                miracles[np.asarray(unsupported, dtype=np.int64) - 1] += 1
            span = np.arange(texts.starts[i], texts.starts[i] + count)
            if not totals:
                scores.unparsed(span, self.unparsed)
                continue
            scores.values[span] = -self.miracle_penalty * miracles / len(totals)
            scores.values[texts.last[i]] += float(np.mean(totals))


@register("signal", "judge_checklist", paper="CM2 (checklist rewards, 2025)")
@dataclass(frozen=True)
class ChecklistJudge(JudgeSignal):
    """The share of checklist items the judge marks satisfied, on the last step."""

    family: ClassVar[str] = "judge_checklist"
    list_fields: ClassVar[frozenset[str]] = TRAJECTORY | {"checklist"}
    sections: ClassVar[Mapping[str, frozenset[str]]] = {
        "system": list_fields,
        "user": list_fields,
        "checklist": frozenset(),
    }
    max_tokens: Count = 128

    def score(self, bound: BoundJudge, texts: JudgedBatch, scores: Scores) -> None:
        _uses_reference(bound.prompt, texts)
        shared = bound.prompt.items("checklist") if "checklist" in bound.prompt else []
        per_trajectory = texts.text.get("checklist")
        requests, counts = [], []
        for i in range(len(texts.steps)):
            items = (
                [s.strip() for s in per_trajectory[i].splitlines() if s.strip()]
                if per_trajectory is not None
                else shared
            )
            if not items:
                raise ValidationError(
                    "text.checklist",
                    f"trajectory {i} has no checklist items (neither text['checklist'] nor a "
                    f"'## checklist' section in {bound.prompt.path})",
                )
            listed = "\n".join(f"{k + 1}. {item}" for k, item in enumerate(items))
            requests.append(
                self.request(bound.prompt.messages(**bound.values(texts, i, checklist=listed)))
            )
            counts.append(len(items))
        for i, reply in enumerate(bound.ask(requests)):
            shares = []
            for text in reply.texts:
                answers = parse_checklist(text, counts[i])
                if answers is None:
                    scores.failures += 1
                else:
                    shares.append(float(np.mean(answers)))
            if shares:
                scores.values[texts.last[i]] = float(np.mean(shares))
            else:
                scores.unparsed(texts.last[i], self.unparsed)


@dataclass(frozen=True)
class PairwiseJudgeSignal(JudgeSignal):
    """What the families that compare two responses share: ``P(a ≻ b)`` from ``Winner:`` replies,
    averaged over both presentation orders when ``both_orders`` (cancelling a judge's position
    bias)."""

    sections: ClassVar[Mapping[str, frozenset[str]]] = {"system": PAIR, "user": PAIR}
    max_tokens: Count = 128
    both_orders: bool = True

    def compare(
        self, bound: BoundJudge, texts: JudgedBatch, pairs: Sequence[tuple[int, int]]
    ) -> tuple[list[float | None], int]:
        """``P(response a ≻ response b)`` per pair (``None``: nothing parsed) and the number of
        unparsed replies."""
        _uses_reference(bound.prompt, texts)
        orders = [(a, b, False) for a, b in pairs]
        if self.both_orders:
            orders += [(b, a, True) for a, b in pairs]
        requests = [
            self.request(
                bound.prompt.messages(
                    **bound.values(texts, a, a=texts.solution(a), b=texts.solution(b))
                )
            )
            for a, b, _ in orders
        ]
        readings: list[list[float]] = [[] for _ in pairs]
        failures = 0
        for k, ((_, _, swapped), reply) in enumerate(zip(orders, bound.ask(requests), strict=True)):
            for text in reply.texts:
                winner = parse_winner(text)
                if winner is None:
                    failures += 1
                else:
                    readings[k % len(pairs)].append(1.0 - winner if swapped else winner)
        return [float(np.mean(r)) if r else None for r in readings], failures


def group_members(batch_groups: np.ndarray, texts: JudgedBatch, family: str) -> list[np.ndarray]:
    """Trajectory indices per group, checked to share one problem."""
    order = np.argsort(batch_groups, kind="stable")
    cuts = np.flatnonzero(np.diff(batch_groups[order])) + 1
    members = np.split(order, cuts)
    for g in members:
        if len({texts.problems[i] for i in g}) > 1:
            raise ValidationError(
                GROUP, f"{family}: group {batch_groups[g[0]]} holds different prompts"
            )
    return members


def _groups(texts: JudgedBatch, family: str) -> list[np.ndarray]:
    if texts.groups is None:
        raise ValidationError(GROUP, f"{family} compares responses within groups: none given")
    return group_members(texts.groups, texts, family)


@register("signal", "judge_pairwise", paper="Writing-Zero (BRPO, 2025)")
@dataclass(frozen=True)
class PairwiseJudge(PairwiseJudgeSignal):
    """BRPO: ``r_i = P(y_i ≻ y_ref)`` against a response drawn at random from the group (the
    reference scores ½), on the last step."""

    family: ClassVar[str] = "judge_pairwise"

    def score(self, bound: BoundJudge, texts: JudgedBatch, scores: Scores) -> None:
        pairs = []
        for members in _groups(texts, self.family):
            reference = int(members[bound.rng.integers(len(members))])
            scores.values[texts.last[reference]] = 0.5
            pairs += [(int(i), reference) for i in members if i != reference]
        wins, scores.failures = self.compare(bound, texts, pairs)
        for (i, _), win in zip(pairs, wins, strict=True):
            if win is None:
                scores.unparsed(texts.last[i], self.unparsed)
            else:
                scores.values[texts.last[i]] = win


@register("signal", "judge_tournament", paper="ArenaRL (tournament-based relative ranking, 2025)")
@dataclass(frozen=True)
class TournamentJudge(PairwiseJudgeSignal):
    """Seeded single elimination within each group: knocked out in round ``ρ`` of
    ``R = ⌈log₂ G⌉`` scores ``(ρ − 1) / R``, the champion 1. A match the judge leaves even (a
    tie, or nothing parsed) is settled by a seeded coin; unparsed matches are marked on both
    players."""

    family: ClassVar[str] = "judge_tournament"

    def score(self, bound: BoundJudge, texts: JudgedBatch, scores: Scores) -> None:
        groups = _groups(texts, self.family)
        alive = [list(bound.rng.permutation(g).astype(int)) for g in groups]
        rounds = [max(1, math.ceil(math.log2(len(g)))) if len(g) > 1 else 1 for g in groups]
        reached = {int(i): 1 for g in groups for i in g}
        played = 1
        while any(len(a) > 1 for a in alive):
            # every group's matches of this round in one batch of requests
            matches = [
                (players[k], players[k + 1])
                for players in alive
                for k in range(0, len(players) - 1, 2)
            ]
            wins, failures = self.compare(bound, texts, matches)
            scores.failures += failures
            outcome = {}
            for (a, b), win in zip(matches, wins, strict=True):
                if win is None:
                    scores.parsed[[texts.last[a], texts.last[b]]] = 0.0
                    win = 0.5
                if win == 0.5:
                    win = float(bound.rng.integers(2))
                outcome[(a, b)] = a if win > 0.5 else b
            played += 1
            survivors = []
            for players in alive:
                next_round = [
                    outcome[(players[k], players[k + 1])] for k in range(0, len(players) - 1, 2)
                ]
                if len(players) % 2:
                    next_round.append(players[-1])  # a bye
                for winner in next_round:
                    reached[winner] = played
                survivors.append(next_round)
            alive = survivors
        for g, total in zip(groups, rounds, strict=True):
            for i in g:
                champion = len(g) == 1 or reached[int(i)] > total
                value = 1.0 if champion else (reached[int(i)] - 1) / total
                scores.values[texts.last[int(i)]] = value


@register("signal", "judge_principles", paper="Inference-Time Scaling for Generalist RM (SPCT)")
@dataclass(frozen=True)
class PrinciplesJudge(JudgeSignal):
    """SPCT: ``samples`` sampled replies, each principles + critique + ``Score: S``;
    ``r = mean_j S_j / S_max`` on the last step. With ``meta_keep = m > 0`` a meta-judge (the
    ``meta`` section) reads each critique and says whether it is reliable; only the ``m``
    critiques with the highest ``P(yes)`` vote."""

    family: ClassVar[str] = "judge_principles"
    sections: ClassVar[Mapping[str, frozenset[str]]] = {
        "system": TRAJECTORY,
        "user": TRAJECTORY,
        "meta": TRAJECTORY | {"critique"},
    }
    samples: Count = 4
    temperature: NonNegative = 0.7
    max_tokens: Count = 256
    max_score: Positive = 10.0
    meta_keep: NonNegativeCount = 0

    def score(self, bound: BoundJudge, texts: JudgedBatch, scores: Scores) -> None:
        _uses_reference(bound.prompt, texts)
        if self.meta_keep and "meta" not in bound.prompt:
            raise ConfigError(bound.prompt.path, "meta_keep is set but there is no '## meta'")
        requests = [
            self.request(bound.prompt.messages(**bound.values(texts, i)))
            for i in range(len(texts.steps))
        ]
        votes: list[list[tuple[str, float]]] = []
        for reply in bound.ask(requests):
            parsed = []
            for text in reply.texts:
                value = parse_score(text, self.max_score)
                if value is None:
                    scores.failures += 1
                else:
                    parsed.append((text, value))
            votes.append(parsed)
        if self.meta_keep:
            votes = self.keep_trusted(bound, texts, votes, scores)
        for i, parsed in enumerate(votes):
            if parsed:
                scores.values[texts.last[i]] = float(np.mean([v for _, v in parsed]))
            else:
                scores.unparsed(texts.last[i], self.unparsed)

    def keep_trusted(
        self,
        bound: BoundJudge,
        texts: JudgedBatch,
        votes: list[list[tuple[str, float]]],
        scores: Scores,
    ) -> list[list[tuple[str, float]]]:
        """The ``meta_keep`` critiques per trajectory the meta-judge trusts most."""
        flat = [(i, text) for i, parsed in enumerate(votes) for text, _ in parsed]
        requests = [
            ChatRequest(
                (("user", bound.prompt.render("meta", **bound.values(texts, i, critique=text))),),
                max_tokens=4,
                temperature=0.0,
                seed=self.seed,
                logprobs=True,
                top_logprobs=5,
            )
            for i, text in flat
        ]
        trust: list[list[float]] = [[] for _ in votes]
        for (i, _), reply in zip(flat, bound.ask(requests), strict=True):
            reading = yes_probability(reply)
            if reading is None:
                reading = parse_verdict(reply.texts[0])
            if reading is None:
                scores.failures += 1
                reading = 0.0  # an unread meta verdict trusts nothing; the critique still counts
            trust[i].append(reading)
        kept = []
        for parsed, rating in zip(votes, trust, strict=True):
            order = np.argsort(-np.asarray(rating), kind="stable")[: self.meta_keep]
            kept.append([parsed[k] for k in sorted(order)])
        return kept
