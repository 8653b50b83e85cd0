"""GRPO for Hugging Face causal LMs, with a pluggable reward pipeline.

Read it top to bottom: sample a group of responses per prompt (prompt prefilled once, KV cache
shared by the group), grade them exactly, run the reward pipeline — signals, transforms, then the
estimator (plain GRPO on the outcome by default) — spread each step's advantage over the step's
tokens, and take clipped policy-gradient steps with a KL penalty to the frozen reference:

    L = −(1/|tokens|) Σ_t [min(ρ_t A_t, clip(ρ_t, 1−ε, 1+ε) A_t) − β · KL_t],
    ρ_t = π_θ(y_t|·)/π_old(y_t|·),  KL_t = exp(log π_ref − log π_θ) − (log π_ref − log π_θ) − 1

(DeepSeekMath's GRPO with the k3 KL estimator; the sum over all response tokens of the batch
divided by their number, so long responses are not down-weighted — Dr.GRPO/DAPO's choice).

The pipeline is the only plug-in point. Accuracy is the exact verifier's; it is logged on the
training samples and, every ``eval_every`` updates, greedily on held-out problems, together with
every reward component the pipeline wrote, response length, KL and the clipped fraction.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from densereward.core.layouts import broadcast_to_tokens
from densereward.core.segments import segment_sum
from densereward.models.language import Rows, token_logprobs
from densereward.pipeline import Pipeline, PipelineResult, Recipe
from densereward.signals.base import SignalContext
from densereward.worlds.reasoning.rollouts import rollout
from densereward.worlds.reasoning.tasks import Problem


@dataclass(frozen=True)
class GRPOConfig:
    """Hyper-parameters of one GRPO run."""

    updates: int = 60
    prompts_per_update: int = 16
    group_size: int = 8
    """Responses sampled per prompt (the GRPO group)."""
    max_new_tokens: int = 40
    temperature: float = 1.0
    learning_rate: float = 2e-4
    clip_epsilon: float = 0.2
    kl_coef: float = 0.02
    update_epochs: int = 1
    """Passes over each batch; with more than one, the ratio departs from 1 and clipping acts."""
    max_grad_norm: float = 1.0
    eval_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("updates", "prompts_per_update", "group_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


@dataclass
class GRPOResult:
    policy: PreTrainedModel
    pipeline: Pipeline
    metrics: list[dict[str, float]] = field(default_factory=list)


def evaluate_accuracy(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[Problem],
    max_new_tokens: int,
    samples: int = 4,
) -> dict[str, float]:
    """Held-out accuracy: ``eval_accuracy`` is the mean over ``samples`` responses per problem at
    temperature 1 (what the policy does; what GRPO optimises), ``eval_greedy_accuracy`` greedy;
    ``eval_process_accuracy``: sampled responses with no wrong step."""
    greedy, _, _ = rollout(policy, tokenizer, problems, 1, max_new_tokens, temperature=0.0)
    sampled, _, _ = rollout(
        policy, tokenizer, problems, samples, max_new_tokens, 1.0, torch.Generator().manual_seed(0)
    )
    return {
        "eval_accuracy": float(sampled.episode("outcome").mean()),
        "eval_greedy_accuracy": float(greedy.episode("outcome").mean()),
        "eval_process_accuracy": float((sampled.episode("first_error") == -1).double().mean()),
        "eval_steps": float(sampled.lengths.double().mean()),
    }


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    reference_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_epsilon: float,
    kl_coef: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped GRPO objective with a k3 KL penalty, averaged over the masked tokens."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip_epsilon, 1 + clip_epsilon) * advantages
    log_ref_ratio = reference_logprobs - logprobs
    kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1
    per_token = -(torch.minimum(unclipped, clipped) - kl_coef * kl)
    count = mask.sum().clamp(min=1)
    loss = (per_token * mask).sum() / count
    stats = {
        "kl": float((kl * mask).sum().detach() / count),
        "clip_fraction": float((((ratio - 1).abs() > clip_epsilon) & mask).sum() / count),
    }
    return loss, stats


def token_advantages(shaped: PipelineResult, rows: Rows) -> tuple[torch.Tensor, torch.Tensor]:
    """Each step's advantage spread over its tokens, ``[batch, width]``, and the tokens the loss
    sees: response tokens inside a step span, of the responses the estimator kept (all, unless
    it selects, as PROF does)."""
    advantages, covered = broadcast_to_tokens(
        shaped.trajectories, shaped.advantages.float(), rows.responses.shape[1]
    )
    mask = covered & rows.response_mask
    if shaped.keep is not None:
        mask &= shaped.keep[:, None]
    return advantages, mask


def train_grpo(
    config: GRPOConfig,
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_problems: Callable[[int, int], list[Problem]],
    eval_problems: Sequence[Problem],
    recipe: Recipe | None = None,
    models: dict[str, Any] | None = None,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> GRPOResult:
    """Train ``policy`` in place. ``train_problems(n, update)`` draws the update's prompts;
    ``models`` are extra named models for the pipeline's signals (PRMs)."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    recipe = recipe or Recipe.from_dict({"estimator": {"kind": "grpo", "reward": None}})
    reference = copy.deepcopy(policy).eval()
    for parameter in reference.parameters():
        parameter.requires_grad_(False)
    pipeline = Pipeline(recipe)
    pipeline.prepare(
        SignalContext(
            seed=config.seed,
            models={"policy": policy, "reference": reference, **(models or {})},
            tokenizer=tokenizer,
        )
    )
    optimizer = torch.optim.AdamW(policy.parameters(), lr=config.learning_rate, weight_decay=0.0)
    result = GRPOResult(policy, pipeline)
    samples = 0
    generated = 0
    start = time.perf_counter()
    for update in range(config.updates + 1):
        # A row describes the policy this update starts from: ``samples`` it has trained on, its
        # held-out accuracy, and the batch it draws (whose metrics follow) before it is updated.
        record: dict[str, float] = {"update": float(update), "samples": float(samples)}
        if update % config.eval_every == 0 or update == config.updates:
            record.update(
                evaluate_accuracy(policy, tokenizer, eval_problems, config.max_new_tokens)
            )
        if update == config.updates:
            record["generated_tokens"] = float(generated)
            record["seconds"] = time.perf_counter() - start
            result.metrics.append(record)
            if progress:
                progress(record)
            break
        problems = train_problems(config.prompts_per_update, update)
        batch, rows, cost = rollout(
            policy,
            tokenizer,
            problems,
            config.group_size,
            config.max_new_tokens,
            config.temperature,
            generator,
        )
        samples += len(batch)
        generated += cost.generated_tokens
        shaped = pipeline(batch, update)
        advantages, mask = token_advantages(shaped, rows)
        with torch.no_grad():
            old = token_logprobs(policy, rows)
            ref = token_logprobs(reference, rows)
        # the policy stays in eval mode: dropout would make π_θ differ from π_old at ratio 1
        for _ in range(config.update_epochs):
            loss, stats = policy_loss(
                token_logprobs(policy, rows),
                old,
                ref,
                advantages,
                mask,
                config.clip_epsilon,
                config.kl_coef,
            )
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            optimizer.step()
        record.update(_batch_metrics(shaped.trajectories, rows, stats))
        if shaped.keep is not None:
            record["kept_fraction"] = float(shaped.keep.double().mean())
        result.metrics.append(record)
        if progress:
            progress(record)
    return result


def _batch_metrics(batch: Any, rows: Rows, stats: dict[str, float]) -> dict[str, float]:
    out = {
        "train_accuracy": float(batch.episode("outcome").mean()),
        "response_tokens": float(rows.response_mask.sum(1).double().mean()),
        "response_steps": float(batch.lengths.double().mean()),
        "process_accuracy": float((batch.episode("first_error") == -1).double().mean()),
        **stats,
    }
    # every reward component the pipeline wrote, as its mean per-trajectory sum
    for name, column in batch.steps.items():
        if name in ("advantage", "return") or not column.is_floating_point():
            continue
        out[f"reward/{name}"] = float(segment_sum(column.double(), batch.segments).mean())
    return out


__all__ = [
    "GRPOConfig",
    "GRPOResult",
    "evaluate_accuracy",
    "policy_loss",
    "token_advantages",
    "train_grpo",
]
