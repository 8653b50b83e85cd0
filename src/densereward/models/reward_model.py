"""Reward models trained from comparisons: the losses, the model, how it scores text.

The model is a ``transformers`` sequence-classification model whose ``K`` outputs are the rewards
of ``K`` ensemble members sharing one backbone (``K = 1``: a plain reward model), so the folder it
is saved to loads with ``AutoModelForSequenceClassification.from_pretrained`` and TRL's
``GRPOTrainer(reward_funcs=[model])`` reads member 0 exactly as it reads any reward model: text
``prompt + completion``, right-padded, no special tokens added, ``logits[:, 0]``. Scores here are
computed the same way (:func:`score_texts`).

Losses, on scores ``s`` (``[N, K]``: one column per member):

- ``bt`` — Bradley-Terry: ``L = −log σ(s_c − s_r)``.
- ``bt_ties`` — Bradley-Terry with ties (win-tie-loss, as SoliReward; Rao-Kupper's form):
  ``P(c ≻ r) = σ(s_c − s_r − θ)``, ``P(tie) = 1 − σ(s_c − s_r − θ) − σ(s_r − s_c − θ)``,
  ``θ = softplus(η) > 0`` learnt; ``L = −log P(observed)``.
- ``plackett_luce`` — list ranking (TPO): for a list ranked best first,
  ``L = −Σ_k [s_{π_k} − log Σ_{j ≥ k} exp s_{π_j}]``.
- ``ordinal`` — ordinal probabilistic reward (OPRM, a cumulative-link model): grades
  ``0 … G−1``, ``P(y ≤ g) = σ(θ_g − s)`` with ordered thresholds ``θ_0 < … < θ_{G−2}``;
  ``L = −log (P(y ≤ g) − P(y ≤ g − 1))``.

Ensembles (Ctrl-U; Secrets of RLHF II): member ``k`` weighs example ``n`` by a fixed
``w_{nk} ~ Poisson(1)`` (the bootstrap), so members differ; the reward is ``mean_k s_k`` and its
uncertainty ``std_k s_k``, which a signal can subtract (``mean − κ·std``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from densereward.core.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Loss = Literal["bt", "bt_ties", "plackett_luce", "ordinal"]
LOSSES: tuple[str, ...] = ("bt", "bt_ties", "plackett_luce", "ordinal")
HEAD_STATE = "reward_head.pt"
"""beside the model: the loss's own parameters (the tie margin, the ordinal thresholds)"""


def bradley_terry_loss(chosen: Tensor, rejected: Tensor) -> Tensor:
    """``−log σ(s_c − s_r)`` per pair (and member).

    >>> round(float(bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]))), 4)
    0.3133
    """
    return F.softplus(rejected - chosen)


def bradley_terry_ties_loss(
    chosen: Tensor, rejected: Tensor, tie: Tensor, margin_parameter: Tensor
) -> Tensor:
    """Rao-Kupper's ``−log P``: ``σ(Δ − θ)`` for a win, ``1 − σ(Δ − θ) − σ(−Δ − θ)`` for a tie,
    ``Δ = s_c − s_r``, ``θ = softplus(margin_parameter)``.

    The three outcomes' probabilities sum to 1:

    >>> d, theta = torch.tensor(0.3), torch.tensor(0.5)
    >>> win, loss = torch.sigmoid(d - F.softplus(theta)), torch.sigmoid(-d - F.softplus(theta))
    >>> tie = torch.exp(-bradley_terry_ties_loss(d, 0 * d, torch.tensor(True), theta))
    >>> round(float(win + loss + tie), 6)
    1.0
    """
    theta = F.softplus(margin_parameter)
    delta = chosen - rejected
    win = -F.logsigmoid(delta - theta)
    # P(tie) = σ(θ−Δ) − σ(−θ−Δ); log(σ(a) − σ(b)) = log σ(a) + log(1 − e^{log σ(b) − log σ(a)})
    # for a > b keeps it finite where both are tiny
    upper, lower = F.logsigmoid(theta - delta), F.logsigmoid(-theta - delta)
    tied = -(upper + torch.log1p(-torch.exp(lower - upper).clamp(max=1 - 1e-12)))
    return torch.where(tie, tied, win)


def plackett_luce_loss(scores: Tensor, mask: Tensor) -> Tensor:
    """``−Σ_k [s_k − log Σ_{j ≥ k} exp s_j]`` per list, for ``scores`` ``[N, L(, K)]`` ranked
    best first and ``mask`` ``[N, L]`` (``True`` where a list has an item; items are a prefix).

    Two items reduce to Bradley-Terry:

    >>> s = torch.tensor([[1.0, 0.0]])
    >>> bool(torch.isclose(plackett_luce_loss(s, torch.ones(1, 2, dtype=torch.bool))[0],
    ...                    bradley_terry_loss(torch.tensor(1.0), torch.tensor(0.0))))
    True
    """
    while mask.dim() < scores.dim():
        mask = mask.unsqueeze(-1)
    masked = scores.masked_fill(~mask, float("-inf"))
    # log Σ_{j ≥ k} exp s_j: a reversed cumulative logsumexp along the list
    tail = torch.logcumsumexp(masked.flip(1), 1).flip(1)
    terms = torch.where(mask, masked - tail, torch.zeros_like(scores))
    return -terms.sum(1)


def ordinal_thresholds(parameters: Tensor) -> Tensor:
    """Ordered thresholds ``θ_0 < θ_1 < …``: the first free, each next one a softplus above."""
    return torch.cat([parameters[:1], parameters[:1] + F.softplus(parameters[1:]).cumsum(0)])


def ordinal_loss(scores: Tensor, grades: Tensor, parameters: Tensor) -> Tensor:
    """``−log (σ(θ_g − s) − σ(θ_{g−1} − s))`` with ``θ_{−1} = −∞``, ``θ_{G−1} = +∞``, for
    ``scores`` ``[N(, K)]`` and integer ``grades`` ``[N]`` in ``0 … G−1`` (``G − 1`` parameters).

    The probabilities of all grades sum to 1:

    >>> p = torch.tensor([0.0, 0.4, -0.2])
    >>> total = sum(torch.exp(-ordinal_loss(torch.tensor([0.3]), torch.tensor([g]), p)) for g in range(4))
    >>> round(float(total[0]), 6)
    1.0
    """
    theta = ordinal_thresholds(parameters)
    if scores.dim() == 2:
        grades = grades.unsqueeze(-1).expand_as(scores)
    inf = torch.full((1,), float("inf"), dtype=theta.dtype)
    cuts = torch.cat([-inf, theta, inf])
    upper = cuts[grades + 1] - scores
    lower = cuts[grades] - scores
    # log(σ(u) − σ(l)) for u > l, stably
    log_upper = F.logsigmoid(upper)
    log_lower = F.logsigmoid(lower)
    return -(log_upper + torch.log1p(-torch.exp(log_lower - log_upper).clamp(max=1 - 1e-12)))


def build_reward_model(
    base: str | Path, tokenizer: PreTrainedTokenizerBase, members: int = 1
) -> PreTrainedModel:
    """A sequence-classification model with ``members`` outputs on the backbone saved in
    ``base`` (a causal LM or a reward model folder); the new head starts at zero-mean random."""
    from transformers import AutoModelForSequenceClassification

    if tokenizer.pad_token_id is None:
        raise ConfigError("tokenizer", "needs a pad token (rewards are read at the last non-pad)")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(base), num_labels=members, ignore_mismatched_sizes=True
        )
    except (OSError, ValueError, KeyError) as error:
        text = " ".join(str(error).split())
        raise ConfigError("--base", f"cannot load a backbone from {base}: {text}") from None
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.problem_type = "regression"
    return model


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> dict[str, Tensor]:
    """``texts`` tokenized as TRL tokenizes what it asks a reward model: right-padded, no special
    tokens added."""
    return dict(
        tokenizer(
            list(texts),
            return_tensors="pt",
            padding=True,
            padding_side="right",
            add_special_tokens=False,
        )
    )


def score_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    chunk: int = 64,
) -> Tensor:
    """``[N, K]`` member rewards of ``texts`` (no gradient)."""
    outputs = []
    with torch.no_grad():
        for start in range(0, len(texts), chunk):
            inputs = encode_texts(tokenizer, texts[start : start + chunk])
            outputs.append(model(**inputs).logits.double())
    return torch.cat(outputs) if outputs else torch.zeros(0, model.config.num_labels)


def load_reward_model(folder: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A reward model folder (``densereward train-rm``'s output) and its tokenizer, eval mode."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not Path(folder).is_dir():
        raise ConfigError("reward model", f"{folder} is not a folder")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(folder))
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError) as error:
        text = " ".join(str(error).split())
        raise ConfigError("reward model", f"cannot load {folder}: {text}") from None
    return model.eval(), tokenizer


def save_head_state(folder: Path, loss: str, parameters: Tensor, extra: dict[str, Any]) -> None:
    torch.save(
        {"loss": loss, "parameters": parameters.detach().cpu(), **extra}, folder / HEAD_STATE
    )


def load_tokenizer(folder: str | Path, option: str = "--tokenizer") -> PreTrainedTokenizerBase:
    """The tokenizer saved in ``folder``, or a one-line ``ConfigError`` naming ``option``."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError) as error:
        text = " ".join(str(error).split())
        raise ConfigError(option, f"cannot load a tokenizer from {folder}: {text}") from None
