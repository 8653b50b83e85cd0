"""Process reward model: a causal-LM backbone plus a linear head read at step-tag positions.

Math-Shepherd's recipe: a step tag (``ки``) follows every step; one forward pass over the whole
solution gives a hidden state at every tag, and ``σ(w·h + b)`` there is the probability that the
solution is still on track after that step. Because attention is causal, the score at a tag sees
exactly the prefix up to that step, so one pass equals scoring every prefix separately.

Training: step-wise binary cross-entropy against hard (0/1) or soft (MC fraction) labels. Any
``transformers`` causal LM works as backbone (its final hidden states are read).

Positions are given per step as ``[row, column]`` pairs into ``Rows.input_ids``, so the same model
scores policy rollouts (tag = last token of each step span) and ProcessBench-style files.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from densereward.core.errors import ConfigError
from densereward.core.segments import expand_ranges
from densereward.models.language import Rows, position_ids

if TYPE_CHECKING:
    from transformers import PreTrainedModel


HEAD_FILE = "prm_head.safetensors"


class ProcessRewardModel(nn.Module):
    """``backbone`` (a causal LM, copied) and a scalar head; ``forward`` gives logits per token."""

    def __init__(self, backbone: PreTrainedModel) -> None:
        super().__init__()
        self.backbone = copy.deepcopy(backbone)
        self.head = nn.Linear(self.backbone.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def hidden(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Final hidden states ``[B, L, H]`` of the backbone's base model: the causal LM's
        vocabulary projection is never computed."""
        out = self.backbone.base_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids(attention_mask),
        )
        return out.last_hidden_state

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Logits ``[B, L]`` at every position (read the ones at step tags)."""
        return self.head(self.hidden(input_ids, attention_mask)).squeeze(-1)

    def step_logits(self, rows: Rows, positions: Tensor) -> Tensor:
        """Logits at ``positions`` (``[S, 2]`` row/column pairs), one forward pass for all rows.

        Only the hidden states at the tags go through the head.
        """
        hidden = self.hidden(rows.input_ids, rows.attention_mask)
        picked = hidden[positions[:, 0], positions[:, 1]]
        return self.head(picked).squeeze(-1)

    def save_pretrained(self, directory: str | Path) -> None:
        """The backbone as a Hugging Face model folder (``config.json``, safetensors weights) plus
        the head in ``prm_head.safetensors``: any ``transformers`` tool can load the backbone."""
        from safetensors.torch import save_file

        directory = Path(directory)
        self.backbone.save_pretrained(directory)
        save_file(
            {name: t.detach().contiguous() for name, t in self.head.state_dict().items()},
            str(directory / HEAD_FILE),
        )

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> ProcessRewardModel:
        """A model written by :meth:`save_pretrained` (only local files are read)."""
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM

        directory = Path(directory)
        if not (directory / HEAD_FILE).is_file():
            raise ConfigError(
                "model", f"{directory} is not a process reward model folder (no {HEAD_FILE})"
            )
        try:
            backbone = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True)
            head = nn.Linear(backbone.config.hidden_size, 1)
            head.load_state_dict(load_file(str(directory / HEAD_FILE)))
        except (OSError, ValueError, RuntimeError) as error:
            reason = (
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
            raise ConfigError("model", f"cannot load {directory}: {reason}") from None
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model.backbone = backbone
        model.head = head
        return model.eval()

    @torch.no_grad()
    def score(self, rows: Rows, positions: Tensor, chunk: int = 256) -> Tensor:
        """``σ(logit)`` at each position, ``[S]``, in chunks of rows."""
        self.eval()
        out = []
        for start in range(0, rows.input_ids.shape[0], chunk):
            index = torch.arange(start, min(start + chunk, rows.input_ids.shape[0]))
            inside = (positions[:, 0] >= start) & (positions[:, 0] < start + chunk)
            local = positions[inside].clone()
            local[:, 0] -= start
            out.append(torch.sigmoid(self.step_logits(rows.select(index), local)))
        return torch.cat(out) if out else torch.zeros(0)


def train_prm(
    model: ProcessRewardModel,
    rows: Rows,
    positions: Tensor,
    labels: Tensor,
    epochs: int = 3,
    batch_size: int = 64,
    learning_rate: float = 5e-4,
    seed: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
) -> list[float]:
    """Step-wise BCE with (hard or soft) ``labels`` ``[S]`` at ``positions``. Returns losses.

    ``optimizer`` (over ``model``'s parameters) carries its moments across calls, for a model
    trained in rounds; without it a fresh AdamW at ``learning_rate`` is made."""
    rng = np.random.default_rng(seed)
    if optimizer is None:
        optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    n_rows = rows.input_ids.shape[0]
    step_row = positions[:, 0].numpy()
    # steps of each row, so a batch of rows brings all its steps: CSR over rows
    order = np.argsort(step_row, kind="stable")
    bounds = np.searchsorted(step_row[order], np.arange(n_rows + 1))
    losses = []
    model.train()
    for _ in range(epochs):
        perm = rng.permutation(n_rows)
        for start in range(0, n_rows, batch_size):
            batch_rows = np.sort(perm[start : start + batch_size])
            picked, _ = expand_ranges(
                torch.as_tensor(bounds[batch_rows]),
                torch.as_tensor(bounds[batch_rows + 1] - bounds[batch_rows]),
            )
            steps = order[picked.numpy()]
            if steps.size == 0:
                continue
            local = positions[steps].clone()
            local[:, 0] = torch.as_tensor(np.searchsorted(batch_rows, local[:, 0].numpy()))
            logits = model.step_logits(rows.select(torch.as_tensor(batch_rows)), local)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels[steps].float())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(float(loss.detach()))
    model.eval()
    return losses


@torch.no_grad()
def step_bce(model: ProcessRewardModel, rows: Rows, positions: Tensor, labels: Tensor) -> float:
    """Mean step-wise BCE of ``model`` against ``labels`` at ``positions`` (the training loss,
    measured without a gradient)."""
    if len(labels) == 0:
        return 0.0
    probabilities = model.score(rows, positions).clamp(1e-6, 1 - 1e-6).double()
    return float(nn.functional.binary_cross_entropy(probabilities, labels.double()))


def flatten_labels(labels: Sequence[Sequence[float]]) -> Tensor:
    return torch.tensor([v for row in labels for v in row], dtype=torch.float32)
