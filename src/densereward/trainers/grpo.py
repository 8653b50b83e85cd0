"""GRPO for Hugging Face causal LMs, with a pluggable reward pipeline.

Read it top to bottom: draw the update's prompts from the task, sample a group of responses per
prompt (the task grades them), run the reward pipeline — signals, transforms, then the estimator
(plain GRPO on the outcome by default) — spread each step's advantage over the step's tokens,
and take clipped policy-gradient steps with a KL penalty to the frozen reference:

    L = −(1/|tokens|) Σ_t [min(ρ_t A_t, clip(ρ_t, 1−ε, 1+ε) A_t) − β · KL_t],
    ρ_t = π_θ(y_t|·)/π_old(y_t|·),  KL_t = exp(log π_ref − log π_θ) − (log π_ref − log π_θ) − 1

(DeepSeekMath's GRPO with the k3 KL estimator; the sum over all response tokens of the batch
divided by their number, so long responses are not down-weighted — Dr.GRPO/DAPO's choice).

The pipeline is the only plug-in point; the task (a ``LanguageTask``: prompts, graded rollouts,
evaluation) is what a world supplies. Accuracy is the mean of the batch's ``verdict`` column —
the grader's, which no transform can move — logged on the training samples and, every
``eval_every`` updates, by the task's held-out evaluation, together with every reward component
the pipeline wrote, the task's own batch metrics, response length, KL and the clipped fraction.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch

from densereward.core.components import SignalContext
from densereward.core.errors import ConfigError, NonFiniteError, ValidationError
from densereward.core.layouts import broadcast_to_tokens
from densereward.core.segments import segment_sum
from densereward.core.trajectories import Trajectories
from densereward.models.language import Rows, SampleCost, token_logprobs
from densereward.pipeline import Pipeline, PipelineResult, Recipe
from densereward.trainers.config import check_rates
from densereward.trainers.guards import clip_and_check, located

if TYPE_CHECKING:  # transformers costs a second to import; annotations only
    from transformers import PreTrainedModel


class LanguageTask(Protocol):
    """What GRPO needs from a world whose policies are causal LMs."""

    def prompts(self, n: int, update: int) -> Sequence[Any]:
        """The ``n`` problems of one update."""
        ...

    def rollout(
        self,
        policy: PreTrainedModel,
        prompts: Sequence[Any],
        group_size: int,
        max_new_tokens: int,
        temperature: float,
        generator: torch.Generator,
    ) -> tuple[Trajectories, Rows, SampleCost]:
        """``group_size`` responses per prompt (one group each), graded: the batch carries
        ``outcome`` (the reward), ``verdict`` (correct or not) and token spans of its steps."""
        ...

    def evaluate(self, policy: PreTrainedModel, max_new_tokens: int) -> dict[str, float]:
        """Held-out metrics of the policy (``eval_accuracy``...)."""
        ...

    def batch_metrics(self, batch: Trajectories) -> dict[str, float]:
        """The task's own metrics of one graded training batch (process accuracy...)."""
        ...


@dataclass(frozen=True)
class GRPOConfig:
    """Hyper-parameters of one GRPO run."""

    length: ClassVar[str] = "updates"
    estimator: ClassVar[dict[str, Any]] = {"kind": "grpo"}

    updates: int = 60
    """policy updates, one batch of prompts each"""
    prompts_per_update: int = 16
    """prompts drawn per update"""
    group_size: int = 8
    """responses sampled per prompt (the GRPO group)"""
    max_new_tokens: int = 40
    """longest response, in tokens"""
    temperature: float = 1.0
    """sampling temperature of training rollouts"""
    learning_rate: float = 2e-4
    """AdamW's learning rate"""
    clip_range: float = 0.2
    """the ε of the clipped ratio ``clip(ρ, 1-ε, 1+ε)``"""
    kl_coef: float = 0.02
    """β, the weight of the k3 KL penalty to the reference"""
    update_epochs: int = 1
    """passes over each batch; with more than one, the ratio departs from 1 and clipping acts"""
    max_grad_norm: float = 1.0
    """global gradient-norm clip"""
    eval_every: int = 10
    """updates between held-out evaluations (the first and the last are always evaluated)"""
    seed: int = 0
    """seeds torch and the sampler (a run sets it per seed)"""

    def __post_init__(self) -> None:
        for name in (
            "updates",
            "prompts_per_update",
            "group_size",
            "max_new_tokens",
            "update_epochs",
            "eval_every",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"must be at least 1, got {getattr(self, name)}")
        check_rates(
            self,
            positive=("temperature", "learning_rate", "clip_range", "max_grad_norm"),
            non_negative=("kl_coef",),
        )

    @property
    def budget(self) -> int:
        """Training samples (responses) of one run."""
        return self.updates * self.prompts_per_update * self.group_size


@dataclass
class GRPOResult:
    policy: PreTrainedModel
    pipeline: Pipeline
    metrics: list[dict[str, float]] = field(default_factory=list)


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    reference_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
    kl_coef: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped GRPO objective with a k3 KL penalty, averaged over the masked tokens."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip_range, 1 + clip_range) * advantages
    log_ref_ratio = reference_logprobs - logprobs
    kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1
    per_token = -(torch.minimum(unclipped, clipped) - kl_coef * kl)
    count = mask.sum().clamp(min=1)
    loss = (per_token * mask).sum() / count
    stats = {
        "kl": float((kl * mask).sum().detach() / count),
        "clip_fraction": float((((ratio - 1).abs() > clip_range) & mask).sum() / count),
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
    task: LanguageTask,
    recipe: Recipe | None = None,
    context: SignalContext | None = None,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> GRPOResult:
    """Train ``policy`` in place on ``task``. The pipeline's signals are bound to ``context``
    (the world's: tokenizer, text format, reward models) plus ``policy`` (the live model) and
    ``reference`` (its frozen start)."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    recipe = recipe or Recipe.from_dict({"estimator": {"kind": "grpo", "reward": None}})
    reference = copy.deepcopy(policy).eval()
    for parameter in reference.parameters():
        parameter.requires_grad_(False)
    context = (context or SignalContext(seed=config.seed)).with_models(
        policy=policy, reference=reference
    )
    pipeline = Pipeline(recipe, context)
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
            record.update(task.evaluate(policy, config.max_new_tokens))
        if update == config.updates:
            record["generated_tokens"] = float(generated)
            record["seconds"] = time.perf_counter() - start
            result.metrics.append(record)
            if progress:
                progress(record)
            pipeline.close()
            break
        batch, rows, cost = task.rollout(
            policy,
            task.prompts(config.prompts_per_update, update),
            config.group_size,
            config.max_new_tokens,
            config.temperature,
            generator,
        )
        samples += len(batch)
        generated += cost.generated_tokens
        try:
            shaped = pipeline(batch, update, dtype=torch.float32)
        except NonFiniteError as error:
            raise located(error, config.seed, update) from None
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
                config.clip_range,
                config.kl_coef,
            )
            optimizer.zero_grad()
            loss.backward()
            try:
                clip_and_check({"loss": loss}, policy.parameters(), config.max_grad_norm)
            except NonFiniteError as error:
                raise located(error, config.seed, update) from None
            optimizer.step()
        record.update(_batch_metrics(shaped.trajectories, rows, task.batch_metrics(batch), stats))
        # per-trajectory columns the pipeline's stages wrote (an online reward model's guard,
        # a constrained combination's multipliers), as their batch means
        for name, column in shaped.trajectories.episodes.items():
            if name not in batch.episodes and column.is_floating_point():
                record[f"episode/{name}"] = float(column.double().mean())
        if shaped.keep is not None:
            record["kept_fraction"] = float(shaped.keep.double().mean())
        result.metrics.append(record)
        if progress:
            progress(record)
    return result


def _batch_metrics(
    batch: Trajectories, rows: Rows, task_metrics: dict[str, float], stats: dict[str, float]
) -> dict[str, float]:
    if batch.verdict is None:
        raise ValidationError("verdict", "the task's rollouts must carry a verdict per response")
    out = {
        "train_accuracy": float(batch.verdict.mean()),
        "response_tokens": float(rows.response_mask.sum(1).double().mean()),
        "response_steps": float(batch.lengths.double().mean()),
        **task_metrics,
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
    "LanguageTask",
    "policy_loss",
    "token_advantages",
    "train_grpo",
]
