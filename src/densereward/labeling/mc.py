"""Monte-Carlo step labels (Math-Shepherd), OmegaPRM's binary search, and prover values (PAV).

From the prefix ``s_{≤i}`` of a solution (prompt and its first ``i + 1`` steps), a *prover*
policy samples ``N`` completions; with ``a*`` the reference answer:

- hard label ``1[∃ j: answer_j = a*]``, soft label ``(1/N) Σ_j 1[answer_j = a*]``
  (Math-Shepherd, Wang et al. 2024);
- the soft label estimates ``Q^μ(s_i, a_i)``, the prover's success probability after the step;
  from the prompt alone it estimates ``V^μ(s_0)``. PAV's progress (Setlur et al. 2024) is
  ``A^μ(s_h, a_h) = Q^μ(s_h, a_h) − V^μ(s_h)``, the difference of consecutive values.
- OmegaPRM (Luo et al. 2024) finds the first step whose MC value is 0 by binary search, assuming
  errors are monotone (once wrong, no prefix recovers): ``O(N log M)`` rollouts per solution
  instead of ``O(N M)``.

Every prefix is prefilled once and its KV cache shared by its ``N`` completions
(``models.language.sample``); the cost is reported in generated tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from densereward.models.language import decode_responses, sample

if TYPE_CHECKING:  # transformers costs a second to import; annotations only
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Judge = Callable[[int, str], bool]
"""``judge(problem_index, full_response_text) -> correct``."""


@dataclass(frozen=True)
class Prover:
    """A policy that completes prefixes, and the judge of its completions.

    ``prompts[i]`` is problem ``i``'s prompt as the policy sees it; a prefix is that prompt
    followed by the response so far.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    prompts: Sequence[str]
    judge: Judge
    max_new_tokens: int = 48
    temperature: float = 1.0
    chunk: int = 512
    """Prefixes per sampling call: bounds the KV cache (``chunk × n`` rows) in memory."""

    def success_rate(
        self, problems: Sequence[int], prefixes: Sequence[str], n: int, seed: int
    ) -> tuple[np.ndarray, int]:
        """Fraction of ``n`` completions of each ``prompt + prefix`` judged correct, and the
        number of tokens generated."""
        if not problems:
            return np.zeros(0), 0
        generator = torch.Generator().manual_seed(seed)
        inputs = [self.prompts[p] + prefix for p, prefix in zip(problems, prefixes, strict=True)]
        texts: list[str] = []
        generated = 0
        for start in range(0, len(inputs), self.chunk):
            rows, cost = sample(
                self.model,
                self.tokenizer,
                inputs[start : start + self.chunk],
                n=n,
                max_new_tokens=self.max_new_tokens,
                temperature=self.temperature,
                generator=generator,
            )
            texts += decode_responses(self.tokenizer, rows)
            generated += cost.generated_tokens
        owner = np.repeat(np.arange(len(problems)), n).tolist()
        hits = np.array(
            [self.judge(problems[o], prefixes[o] + t) for o, t in zip(owner, texts, strict=True)]
        )
        return hits.reshape(len(problems), n).mean(1), generated


def prefix_texts(steps: Sequence[str], tag: str) -> list[str]:
    """The response so far after each step: ``s_0 tag``, ``s_0 tag s_1 tag``, ..."""
    out, text = [], ""
    for step in steps:
        text += step + tag
        out.append(text)
    return out


@dataclass(frozen=True)
class MonteCarloLabels:
    """Per solution: soft values after each step, the value of the prompt, tokens generated."""

    soft: list[list[float]]
    start: list[float]
    generated_tokens: int

    @property
    def hard(self) -> list[list[float]]:
        return [[float(v > 0) for v in row] for row in self.soft]


def monte_carlo_labels(
    prover: Prover,
    problems: Sequence[int],
    solutions: Sequence[Sequence[str]],
    tag: str,
    n: int = 8,
    seed: int = 0,
    include_start: bool = True,
) -> MonteCarloLabels:
    """Soft MC values of every step prefix of every solution (all prefixes in one batch)."""
    owner, prefixes = [], []
    for problem, steps in zip(problems, solutions, strict=True):
        if include_start:
            owner.append(problem)
            prefixes.append("")
        for prefix in prefix_texts(steps, tag):
            owner.append(problem)
            prefixes.append(prefix)
    values, tokens = prover.success_rate(owner, prefixes, n, seed)
    soft, start, at = [], [], 0
    for steps in solutions:
        if include_start:
            start.append(float(values[at]))
            at += 1
        soft.append([float(v) for v in values[at : at + len(steps)]])
        at += len(steps)
    return MonteCarloLabels(soft, start, tokens)


def binary_search_first_zero(
    probe: Callable[[list[int], list[int]], np.ndarray], lengths: Sequence[int]
) -> tuple[np.ndarray, int]:
    """OmegaPRM's search, in lockstep over solutions: the first index whose value is 0 (``-1``
    if none), assuming values are positive before it and 0 from it on.

    ``probe(solutions, steps)`` returns the values at those (solution, step) pairs; it is called
    once per round with every unfinished solution. Returns the indices and the number of probes.

    >>> truth = [[0.5, 0.2, 0.0, 0.0], [0.9, 0.8]]
    >>> probe = lambda s, k: np.array([truth[i][j] for i, j in zip(s, k)])
    >>> binary_search_first_zero(probe, [4, 2])
    (array([ 2, -1]), 3)
    """
    low = np.zeros(len(lengths), dtype=np.int64)
    high = np.asarray(lengths, dtype=np.int64).copy()
    probes = 0
    while True:
        active = np.nonzero(low < high)[0]
        if active.size == 0:
            break
        middle = (low[active] + high[active]) // 2
        values = probe(active.tolist(), middle.tolist())
        probes += active.size
        zero = values <= 0
        high[active[zero]] = middle[zero]
        low[active[~zero]] = middle[~zero] + 1
    found = np.where(low >= np.asarray(lengths), -1, low)
    return found, probes


def omega_first_errors(
    prover: Prover,
    problems: Sequence[int],
    solutions: Sequence[Sequence[str]],
    tag: str,
    n: int = 8,
    seed: int = 0,
) -> tuple[np.ndarray, int]:
    """First error of each solution by binary search on MC values; returns it and tokens used."""
    used = [0]
    round_seed = [seed]

    def probe(which: list[int], steps: list[int]) -> np.ndarray:
        prefixes = [prefix_texts(solutions[w], tag)[k] for w, k in zip(which, steps, strict=True)]
        values, tokens = prover.success_rate(
            [problems[w] for w in which], prefixes, n, round_seed[0]
        )
        used[0] += tokens
        round_seed[0] += 1
        return values

    found, _ = binary_search_first_zero(probe, [len(s) for s in solutions])
    return found, used[0]


def labels_from_first_error(
    first_errors: Sequence[int], lengths: Sequence[int]
) -> list[list[float]]:
    """Hard labels: 1 before the first error, 0 from it on (-1: all good)."""
    out = []
    for error, length in zip(first_errors, lengths, strict=True):
        cut = length if error < 0 else int(error)
        out.append([1.0] * cut + [0.0] * (length - cut))
    return out
