"""Training a reward model from comparisons: pairs (with or without ties), ranked lists, or
ordinal grades; a validation split, early stopping on its loss, the best epoch's weights kept.

One module, the loop visible (as ``trainers/ppo.py``): batches of texts are scored by the model
(``[N, K]`` ensemble members), the loss of ``models/reward_model.py`` is weighted by each member's
bootstrap weights, AdamW steps; after every epoch the validation loss and pairwise accuracy are
measured, and training stops once the loss has not improved for ``patience`` epochs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from densereward.core.errors import ConfigError
from densereward.core.parameters import Count, NonNegativeCount, Positive
from densereward.models.reward_model import (
    LOSSES,
    bradley_terry_loss,
    bradley_terry_ties_loss,
    encode_texts,
    ordinal_loss,
    plackett_luce_loss,
)


@dataclass(frozen=True)
class Comparisons:
    """What a reward model learns from: ``lists[i]`` texts ranked best first (a pair is a list of
    two), ``tie[i]`` whether the two of a pair are equally good, or ``grades[i]`` one text's grade
    (then every list has one text)."""

    lists: list[list[str]]
    tie: np.ndarray | None = None
    grades: np.ndarray | None = None
    levels: int | None = None
    """the number of grades ``G`` (grades are ``0 … G−1``)"""

    def __len__(self) -> int:
        return len(self.lists)

    def take(self, index: np.ndarray) -> Comparisons:
        return Comparisons(
            [self.lists[i] for i in index],
            None if self.tie is None else self.tie[index],
            None if self.grades is None else self.grades[index],
            self.levels,
        )


@dataclass(frozen=True)
class RewardModelConfig:
    loss: str = "bt"
    members: Count = 1
    """ensemble members (outputs of one head); the reward is their mean, their spread the
    uncertainty"""
    epochs: Count = 10
    batch_size: Count = 32
    learning_rate: Positive = 1e-4
    validation_fraction: float = 0.1
    patience: NonNegativeCount = 2
    """epochs without a better validation loss before stopping (0: never stop early)"""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError("--loss", f"unknown loss {self.loss!r} (known: {', '.join(LOSSES)})")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError("--validation", f"must be in (0, 1), got {self.validation_fraction}")


@dataclass
class TrainedRewardModel:
    model: Any
    loss_parameters: Tensor
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0


def loss_parameters(config: RewardModelConfig, data: Comparisons) -> Tensor:
    """The loss's own learnt parameters: the tie margin, or ``G − 1`` ordinal thresholds."""
    if config.loss == "bt_ties":
        return torch.zeros(1, requires_grad=True)
    if config.loss == "ordinal":
        assert data.levels is not None
        return torch.zeros(max(data.levels - 1, 1), requires_grad=True)
    return torch.zeros(0, requires_grad=True)


def comparison_loss(
    config: RewardModelConfig, scores: Tensor, mask: Tensor, batch: Comparisons, parameters: Tensor
) -> Tensor:
    """Per example and member, ``[N, K]``: ``scores`` ``[N, L, K]`` of each list's texts."""
    if config.loss == "bt":
        return bradley_terry_loss(scores[:, 0], scores[:, 1])
    if config.loss == "bt_ties":
        assert batch.tie is not None
        tie = torch.as_tensor(batch.tie).unsqueeze(-1).expand_as(scores[:, 0])
        return bradley_terry_ties_loss(scores[:, 0], scores[:, 1], tie, parameters)
    if config.loss == "plackett_luce":
        return plackett_luce_loss(scores, mask)
    assert batch.grades is not None
    return ordinal_loss(scores[:, 0], torch.as_tensor(batch.grades), parameters)


def score_lists(model: Any, tokenizer: Any, batch: Comparisons) -> tuple[Tensor, Tensor]:
    """``[N, L, K]`` scores of every list's texts (one forward pass over the flattened texts)
    and the ``[N, L]`` mask of real items."""
    lengths = [len(texts) for texts in batch.lists]
    width = max(lengths)
    flat = [text for texts in batch.lists for text in texts]
    logits = model(**encode_texts(tokenizer, flat)).logits
    rows = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    columns = torch.cat([torch.arange(n) for n in lengths])
    scores = logits.new_zeros(len(lengths), width, logits.shape[-1])
    scores[rows, columns] = logits
    mask = torch.zeros(len(lengths), width, dtype=torch.bool)
    mask[rows, columns] = True
    return scores, mask


def pairwise_accuracy(scores: Tensor, mask: Tensor, tie: np.ndarray | None) -> tuple[int, int]:
    """Ordered pairs inside lists (earlier = better) whose mean member score agrees, and how many
    there are (tied pairs left out; an equal score counts as wrong)."""
    mean = scores.mean(-1)
    better = mean.unsqueeze(2) > mean.unsqueeze(1)  # [N, i, j]: item i above item j
    ordered = torch.triu(torch.ones_like(better), 1) & mask.unsqueeze(2) & mask.unsqueeze(1)
    if tie is not None:
        ordered &= ~torch.as_tensor(tie).view(-1, 1, 1)
    return int((better & ordered).sum()), int(ordered.sum())


def split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation indices (at least one of each)."""
    order = np.random.default_rng(seed).permutation(n)
    held = min(max(1, round(n * fraction)), n - 1)
    return np.sort(order[held:]), np.sort(order[:held])


def train_reward_model(
    model: Any,
    tokenizer: Any,
    data: Comparisons,
    config: RewardModelConfig,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> TrainedRewardModel:
    """Train ``model`` on ``data``; returns it with the best validation epoch's weights."""
    if len(data) < 2:
        raise ConfigError("data", f"needs at least 2 examples to hold one out, got {len(data)}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    train_index, valid_index = split(len(data), config.validation_fraction, config.seed)
    train, valid = data.take(train_index), data.take(valid_index)
    # bootstrap weights per (example, member): members see different resamples of the data
    weights = torch.as_tensor(
        rng.poisson(1.0, (len(train), config.members))
        if config.members > 1
        else np.ones((len(train), 1)),
        dtype=torch.float32,
    )
    parameters = loss_parameters(config, data)
    optimizer = torch.optim.AdamW(
        [*model.parameters(), parameters], lr=config.learning_rate, weight_decay=0.0
    )
    batches = (len(train) + config.batch_size - 1) // config.batch_size
    result = TrainedRewardModel(model, parameters)
    best, best_state, stale = float("inf"), None, 0
    for epoch in range(config.epochs):
        model.train()
        order = rng.permutation(len(train))
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            index = order[start : start + config.batch_size]
            batch = train.take(index)
            scores, mask = score_lists(model, tokenizer, batch)
            per = comparison_loss(config, scores, mask, batch, parameters)
            w = weights[index]
            loss = (per * w).sum() / w.sum().clamp(min=1.0)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            total += float(loss.detach())
            if progress is not None:
                progress(epoch, start // config.batch_size + 1, {"batches": batches})
        metrics = {
            "epoch": epoch + 1,
            "train_loss": total / batches,
            **evaluate(model, tokenizer, valid, config, parameters),
        }
        result.history.append(metrics)
        if metrics["validation_loss"] < best - 1e-9:
            best, stale, result.best_epoch = metrics["validation_loss"], 0, epoch + 1
            best_state = (copy.deepcopy(model.state_dict()), parameters.detach().clone())
        else:
            stale += 1
            if config.patience and stale >= config.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state[0])
        with torch.no_grad():
            parameters.copy_(best_state[1])
    model.eval()
    return result


def evaluate(
    model: Any,
    tokenizer: Any,
    data: Comparisons,
    config: RewardModelConfig,
    parameters: Tensor,
    batch_size: int = 64,
) -> dict[str, float]:
    """Mean loss and pairwise accuracy on ``data`` (no gradient)."""
    model.eval()
    losses, correct, pairs = [], 0, 0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            batch = data.take(np.arange(start, min(start + batch_size, len(data))))
            scores, mask = score_lists(model, tokenizer, batch)
            losses.append(comparison_loss(config, scores, mask, batch, parameters).mean(-1))
            if batch.grades is None:
                good, count = pairwise_accuracy(scores, mask, batch.tie)
                correct, pairs = correct + good, pairs + count
    metrics = {"validation_loss": float(torch.cat(losses).mean())}
    if pairs:
        metrics["validation_accuracy"] = correct / pairs
    return metrics


def texts_of(prompts: Sequence[str] | None, responses: Sequence[Sequence[str]]) -> list[list[str]]:
    """Each list's texts as a reward model reads them: ``prompt + response``."""
    if prompts is None:
        return [list(r) for r in responses]
    return [[p + r for r in rs] for p, rs in zip(prompts, responses, strict=True)]
