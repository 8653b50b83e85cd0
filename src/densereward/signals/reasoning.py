"""Step rewards for language-model reasoning, from reward models or the policy's own beliefs.

All of them read a batch built by ``models.language.rows_to_trajectories`` (token rows ride along
per trajectory; steps end at step tags) and look their models up by name in the
``SignalContext`` they are bound to; the step tag and answer mark are the world's
(``SignalContext.text_format``).

- ``prm``: a process reward model's probability at each step's last token (one forward pass).
- ``progress``: PAV (Setlur et al. 2024), ``A^μ(s_h, a_h) = Q^μ(s_h, a_h) − V^μ(s_h)``, read from a
  model of the prover's success probability as the change in value across each step (the first
  step is measured from the value of the prompt alone).
- ``implicit_prm``: PRIME (Cui et al. 2025), ``r_φ(y_t) = β log π_φ(y_t|y_<t)/π_ref(y_t|y_<t)``
  per token, summed over each step's tokens; ``π_φ`` is updated online by the cross-entropy of
  ``σ(Σ_t r_φ(y_t))`` against outcome labels only.
- ``information_gain``: IGPO (Wang et al. 2025), ``p_t = exp(mean_j log π_θ(a*_j | x, steps_≤t,
  a*_<j))``, the teacher-forced geometric-mean probability of the reference answer after step
  ``t``; step ``t``'s reward is ``IG_t = p_t − p_{t−1}``, so the rewards telescope to
  ``p_T − p_0``. The untagged tail (the model's own answer) gets 0: the outcome covers it.
- ``answer_likelihood``: ``log π_θ(y* | x, reasoning)`` of the reference answer after the whole
  reasoning, on the last step (Likelihood-Based Reward Designs).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from densereward.core.components import Needs, Signal, SignalContext, TextFormat
from densereward.core.errors import ValidationError
from densereward.core.parameters import Count, Positive
from densereward.core.registry import register
from densereward.core.segments import Segments, previous_in_segment
from densereward.core.trajectories import Trajectories
from densereward.models.language import (
    Rows,
    step_end_positions,
    token_logprobs,
    trajectories_to_rows,
)


def step_token_sums(token_values: Tensor, batch: Trajectories) -> Tensor:
    """Sum of ``token_values`` ``[B, T]`` over each step's token span, ``[steps]``."""
    assert batch.token_spans is not None
    cumulative = torch.nn.functional.pad(token_values.cumsum(1), (1, 0))
    rows = batch.segments.ids
    return cumulative[rows, batch.token_spans[:, 1]] - cumulative[rows, batch.token_spans[:, 0]]


@register("signal", "prm", paper="Math-Shepherd (Wang et al. 2024)")
@dataclass(frozen=True)
class PRMSignal(Signal):
    """Step scores ``σ(head(h_tag))`` of the process reward model named ``model``."""

    model: str = "prm"

    def needs(self) -> Needs:
        return Needs(models=(self.model,))

    def bind(self, context: SignalContext) -> StepScores:
        return StepScores(context.model(self.model, "prm"))


@dataclass(frozen=True)
class StepScores:
    """``PRMSignal`` bound: a ``ProcessRewardModel``."""

    prm: Any

    def __call__(self, batch: Trajectories, name: str) -> Trajectories:
        scores = self.prm.score(trajectories_to_rows(batch), step_end_positions(batch))
        return batch.with_steps(**{name: scores.to(torch.float64)})


@register("signal", "progress", paper="Rewarding Progress (Setlur et al. 2024), PAV")
@dataclass(frozen=True)
class ProgressSignal(Signal):
    """``Q^μ`` after each step minus the value before it, from a prover-value model."""

    model: str = "prover_value"

    def needs(self) -> Needs:
        return Needs(models=(self.model,))

    def bind(self, context: SignalContext) -> StepProgress:
        return StepProgress(context.model(self.model, "progress"))


@dataclass(frozen=True)
class StepProgress:
    """``ProgressSignal`` bound: a prover-value ``ProcessRewardModel`` read at the prompt's last
    token (``V^μ(s_0)``) and at every step end."""

    prm: Any

    def __call__(self, batch: Trajectories, name: str) -> Trajectories:
        rows = trajectories_to_rows(batch)
        ends = step_end_positions(batch)
        starts = torch.stack(
            [torch.arange(len(batch)), torch.full((len(batch),), rows.prompt_width - 1)], 1
        )
        values = self.prm.score(rows, torch.cat([starts, ends])).to(torch.float64)
        progress = step_differences(values[: len(batch)], values[len(batch) :], batch.segments)
        return batch.with_steps(**{name: progress})


def implicit_token_rewards(
    policy_logprobs: Tensor, reference_logprobs: Tensor, beta: float
) -> Tensor:
    """PRIME's token rewards ``β (log π_φ − log π_ref)``; they sum to ``β`` times the sequence
    log-ratio."""
    return beta * (policy_logprobs - reference_logprobs)


@register("signal", "implicit_prm", paper="PRIME (Cui et al. 2025)")
@dataclass(frozen=True)
class ImplicitPRMSignal(Signal):
    """Implicit process rewards from a log-ratio model updated online on outcome labels.

    Each call first takes ``updates`` AdamW steps on ``BCE(σ(β Σ_t log π_φ/π_ref), outcome)``
    over the batch (outcomes in [0, 1]), then scores the batch with the updated ``π_φ``, as
    PRIME's algorithm does. ``π_φ`` and ``π_ref`` both start from the model named ``reference``.
    """

    beta: Positive = 0.05
    learning_rate: Positive = 1e-4
    updates: Count = 1
    reference: str = "reference"

    def needs(self) -> Needs:
        return Needs(models=(self.reference,))

    def bind(self, context: SignalContext) -> OnlineImplicitPRM:
        frozen = context.model(self.reference, "implicit_prm")
        phi = copy.deepcopy(frozen)
        for parameter in phi.parameters():  # the reference may come frozen
            parameter.requires_grad_(True)
        optimizer = torch.optim.AdamW(phi.parameters(), lr=self.learning_rate)
        return OnlineImplicitPRM(self, phi, frozen, optimizer)


@dataclass(frozen=True)
class OnlineImplicitPRM:
    """``ImplicitPRMSignal`` bound: ``π_φ`` (trained online), the frozen ``π_ref``, the optimiser."""

    spec: ImplicitPRMSignal
    phi: Any
    frozen: Any
    optimizer: torch.optim.Optimizer

    def __call__(self, batch: Trajectories, name: str) -> Trajectories:
        rows = trajectories_to_rows(batch)
        beta = self.spec.beta
        with torch.no_grad():  # π_ref is frozen: one pass serves every update and the scoring
            reference = token_logprobs(self.frozen, rows)
        if batch.outcome is not None and self.spec.updates > 0:
            target = batch.outcome.float().clamp(0, 1)
            self.phi.train()
            for _ in range(self.spec.updates):
                policy = token_logprobs(self.phi, rows)
                logit = implicit_token_rewards(policy, reference, beta).sum(1)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, target)
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
            self.phi.eval()
        with torch.no_grad():
            policy = token_logprobs(self.phi, rows)
        tokens = implicit_token_rewards(policy, reference, beta).to(torch.float64)
        return batch.with_steps(**{name: step_token_sums(tokens, batch)})


def answer_rows(
    rows: Rows, row_index: Tensor, cut: Tensor, answers: Tensor, answer_lengths: Tensor, pad: int
) -> tuple[Rows, Tensor]:
    """Rows ``prompt + response[:cut] + answer`` for each (row, cut) pair, built by gathers.

    ``answers`` ``[B, A]`` right-padded answer tokens (with their lead-in, e.g. ``#``). Returns the
    new rows (their "response" is everything after the prompt) and a ``[N, W]`` mask of the
    answer tokens in the response part.
    """
    p = rows.prompt_width
    width_answer = answers.shape[1]
    total = rows.input_ids.shape[1] + width_answer
    column = torch.arange(total)[None, :]
    cut_at = (p + cut)[:, None]
    source = rows.input_ids[row_index]
    source_mask = rows.attention_mask[row_index]
    in_context = column < cut_at
    answer_column = (column - cut_at).clamp(0, width_answer - 1)
    in_answer = (column >= cut_at) & (column - cut_at < answer_lengths[row_index][:, None])
    context_ids = source.gather(1, column.clamp(max=source.shape[1] - 1).expand(len(row_index), -1))
    context_mask = source_mask.gather(
        1, column.clamp(max=source.shape[1] - 1).expand(len(row_index), -1)
    )
    answer_ids = answers[row_index].gather(1, answer_column)
    ids = torch.where(in_context, context_ids, torch.where(in_answer, answer_ids, pad))
    mask = torch.where(in_context, context_mask, in_answer.long())
    return Rows(ids, mask, mask[:, p:] > 0, p), in_answer[:, p:]


def answer_logprob(
    model: Any,
    rows: Rows,
    row_index: Tensor,
    cut: Tensor,
    answers: Tensor,
    lengths: Tensor,
    pad: int,
) -> Tensor:
    """Mean teacher-forced ``log π(a*_j | context, a*_<j)`` over the answer tokens, per pair."""
    built, answer_mask = answer_rows(rows, row_index, cut, answers, lengths, pad)
    with torch.no_grad():
        logp = token_logprobs(model, built)
    picked = logp.masked_fill(~answer_mask, 0.0).sum(1)
    return picked / answer_mask.sum(1).clamp(min=1)


def _reference_answers(
    batch: Trajectories, tokenizer: Any, prefix: str, column: str
) -> tuple[Tensor, Tensor]:
    if column not in batch.text:
        raise ValidationError(column, "information rewards need the reference answer text")
    pieces = [
        tokenizer(prefix + a, add_special_tokens=False)["input_ids"] for a in batch.text[column]
    ]
    width = max(len(p) for p in pieces)
    answers = torch.full((len(pieces), width), tokenizer.pad_token_id, dtype=torch.long)
    for i, ids in enumerate(pieces):  # one tokenizer call per answer string regardless
        answers[i, : len(ids)] = torch.tensor(ids)
    return answers, torch.tensor([len(p) for p in pieces])


@register("signal", "information_gain", paper="IGPO (Wang et al. 2025)")
@dataclass(frozen=True)
class InformationGainSignal(Signal):
    """``IG_t = p_t − p_{t−1}`` per tagged step; ``p`` from the live policy (``model``)."""

    model: str = "policy"
    answer: str = "answer"
    """The text column holding each trajectory's reference answer."""

    def needs(self) -> Needs:
        return Needs(models=(self.model,), text=True)

    def bind(self, context: SignalContext) -> InformationGain:
        tokenizer, text_format = context.require_text("information_gain")
        return InformationGain(
            context.model(self.model, "information_gain"), tokenizer, text_format, self.answer
        )


@dataclass(frozen=True)
class AnswerBelief:
    """A causal LM's belief in each trajectory's reference answer, read after each prefix of
    its response: what ``InformationGainSignal`` and ``AnswerLikelihoodSignal`` bind to."""

    policy: Any
    tokenizer: Any
    text_format: TextFormat
    answer: str

    def answers(self, batch: Trajectories) -> tuple[Tensor, Tensor]:
        return _reference_answers(batch, self.tokenizer, self.text_format.answer_mark, self.answer)

    def probabilities(self, batch: Trajectories) -> tuple[Tensor, Tensor]:
        """``p_0`` per trajectory and ``p_t`` after every step, ``([B], [steps])``."""
        rows = trajectories_to_rows(batch)
        answers, lengths = self.answers(batch)
        assert batch.token_spans is not None
        row_index = torch.cat([torch.arange(len(batch)), batch.segments.ids])
        cut = torch.cat([torch.zeros(len(batch), dtype=torch.long), batch.token_spans[:, 1]])
        logp = answer_logprob(
            self.policy, rows, row_index, cut, answers, lengths, self.tokenizer.pad_token_id
        )
        p = logp.exp().to(torch.float64)
        return p[: len(batch)], p[len(batch) :]

    def tagged(self, batch: Trajectories) -> Tensor:
        """Per step: whether it ends with the step tag (the untagged tail is the model's answer)."""
        rows = trajectories_to_rows(batch)
        ends = step_end_positions(batch)
        tag = self.tokenizer.convert_tokens_to_ids(self.text_format.step_tag)
        return rows.input_ids[ends[:, 0], ends[:, 1]] == tag


@dataclass(frozen=True)
class InformationGain(AnswerBelief):
    """``InformationGainSignal`` bound."""

    def __call__(self, batch: Trajectories, name: str) -> Trajectories:
        p0, p = self.probabilities(batch)
        gain = step_differences(p0, p, batch.segments)
        return batch.with_steps(**{name: gain.masked_fill(~self.tagged(batch), 0.0)})


def step_differences(start: Tensor, values: Tensor, segments: Segments) -> Tensor:
    """``v_t − v_{t−1}`` per step, with ``v_{−1} = start`` of the trajectory; they telescope to
    ``v_T − start``. Information gain (``v = p``) and PAV progress (``v = Q^μ``, ``start = V^μ``)."""
    before = previous_in_segment(values, segments)
    nonempty = segments.lengths > 0
    before[segments.offsets[:-1][nonempty]] = start[nonempty]
    return values - before


@register("signal", "answer_likelihood", paper="Likelihood-Based Reward Designs")
@dataclass(frozen=True)
class AnswerLikelihoodSignal(Signal):
    """``log π_θ(y* | x, reasoning)`` on the last step (mean over answer tokens), 0 elsewhere.

    The reasoning is the response up to its last step tag (the model's own answer is dropped).
    """

    model: str = "policy"
    answer: str = "answer"
    """The text column holding each trajectory's reference answer."""

    def needs(self) -> Needs:
        return Needs(models=(self.model,), text=True)

    def bind(self, context: SignalContext) -> AnswerLikelihood:
        tokenizer, text_format = context.require_text("answer_likelihood")
        return AnswerLikelihood(
            context.model(self.model, "answer_likelihood"), tokenizer, text_format, self.answer
        )


@dataclass(frozen=True)
class AnswerLikelihood(AnswerBelief):
    """``AnswerLikelihoodSignal`` bound."""

    def __call__(self, batch: Trajectories, name: str) -> Trajectories:
        rows = trajectories_to_rows(batch)
        answers, lengths = self.answers(batch)
        assert batch.token_spans is not None
        tagged = self.tagged(batch)
        # the end of the last tagged step of each trajectory (0: no reasoning at all)
        ends = torch.where(
            tagged, batch.token_spans[:, 1], torch.zeros_like(batch.token_spans[:, 1])
        )
        cut = torch.zeros(len(batch), dtype=torch.long).scatter_reduce(
            0, batch.segments.ids, ends, "amax"
        )
        logp = answer_logprob(
            self.policy,
            rows,
            torch.arange(len(batch)),
            cut,
            answers,
            lengths,
            self.tokenizer.pad_token_id,
        ).to(torch.float64)
        out = torch.zeros(batch.num_steps, dtype=torch.float64)
        out[batch.segments.last] = logp
        return batch.with_steps(**{name: out})


__all__ = [
    "AnswerBelief",
    "AnswerLikelihood",
    "AnswerLikelihoodSignal",
    "ImplicitPRMSignal",
    "InformationGain",
    "InformationGainSignal",
    "OnlineImplicitPRM",
    "PRMSignal",
    "ProgressSignal",
    "StepProgress",
    "StepScores",
    "implicit_token_rewards",
    "step_differences",
    "step_token_sums",
]
