"""Causal language models: build small ones from a config, sample with a shared-prefix KV cache,
score token log-probabilities, and supervised fine-tuning.

Nothing here assumes the tiny model: every function takes any ``transformers`` causal LM and
tokenizer (padding on the left for prompts, a pad token set).

Layout used throughout: a batch of *rows* ``[B, P + T]`` = left-padded prompts ``[B, P]`` followed
by responses ``[B, T]`` padded on the right; ``attention_mask`` marks real tokens and
``response_mask`` the response tokens (up to and including the end-of-sequence token).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:  # transformers takes seconds to import: only the functions that build need it
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

from densereward.core.errors import ValidationError
from densereward.core.trajectories import Trajectories


def build_causal_lm(
    tokenizer: PreTrainedTokenizerBase,
    architecture: str = "gpt2",
    layers: int = 2,
    width: int = 128,
    heads: int = 4,
    max_positions: int = 256,
    seed: int = 0,
) -> PreTrainedModel:
    """A randomly initialised GPT-2 or Llama causal LM sized for the tokenizer's vocabulary.

    Dropout is off: policy-gradient ratios compare two forward passes, which dropout would make
    differ even before any update.
    """
    common = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    config: GPT2Config | LlamaConfig
    if architecture == "gpt2":
        config = GPT2Config(
            n_layer=layers,
            n_embd=width,
            n_head=heads,
            n_positions=max_positions,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **common,
        )
    elif architecture == "llama":
        config = LlamaConfig(
            num_hidden_layers=layers,
            hidden_size=width,
            intermediate_size=4 * width,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=max_positions,
            **common,
        )
    else:
        raise ValueError(f"unknown architecture {architecture!r}; known: gpt2, llama")
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def position_ids(attention_mask: Tensor) -> Tensor:
    """Positions that skip left padding, as ``generate`` computes them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@dataclass(frozen=True)
class Rows:
    """Prompt + response rows: ``input_ids``/``attention_mask`` ``[B, P + T]``, ``response_mask``
    ``[B, T]`` and ``prompt_width`` ``P`` (responses start at column ``P``)."""

    input_ids: Tensor
    attention_mask: Tensor
    response_mask: Tensor
    prompt_width: int

    @property
    def responses(self) -> Tensor:
        return self.input_ids[:, self.prompt_width :]

    def select(self, index: Tensor) -> Rows:
        return Rows(
            self.input_ids[index],
            self.attention_mask[index],
            self.response_mask[index],
            self.prompt_width,
        )


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]
) -> tuple[Tensor, Tensor]:
    """Left-padded ``[B, P]`` ids and mask, each prompt starting with the BOS token."""
    bos = tokenizer.bos_token or ""
    encoded = tokenizer(
        [bos + p for p in prompts],
        return_tensors="pt",
        padding=True,
        add_special_tokens=False,
    )
    return encoded["input_ids"], encoded["attention_mask"]


def pad_right(pieces: Sequence[Sequence[int]], pad: int) -> tuple[Tensor, Tensor]:
    """Token lists right-padded into ``[B, width]`` ids and a 0/1 mask (int64)."""
    width = max(len(p) for p in pieces)
    response = torch.full((len(pieces), width), pad, dtype=torch.long)
    mask = torch.zeros((len(pieces), width), dtype=torch.long)
    for row, ids in enumerate(pieces):  # tokenization is per string anyway
        response[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[row, : len(ids)] = 1
    return response, mask


def encode_rows(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], responses: Sequence[str]
) -> Rows:
    """Rows from text: prompts left-padded, responses (plus EOS) right-padded."""
    prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts)
    eos = tokenizer.eos_token or ""
    pieces = [tokenizer(r + eos, add_special_tokens=False)["input_ids"] for r in responses]
    response, mask = pad_right(pieces, tokenizer.pad_token_id)
    return Rows(
        torch.cat([prompt_ids, response], 1),
        torch.cat([prompt_mask, mask], 1),
        mask.bool(),
        prompt_ids.shape[1],
    )


def token_logprobs(
    model: PreTrainedModel, rows: Rows, temperature: float = 1.0, chunk: int = 256
) -> Tensor:
    """``log π(y_t | x, y_<t)`` of every response token, ``[B, T]`` (0 where masked).

    One forward pass per chunk of rows; only the logits from the last prompt position on are
    turned into log-probabilities.
    """
    outputs = []
    p = rows.prompt_width
    for start in range(0, rows.input_ids.shape[0], chunk):
        ids = rows.input_ids[start : start + chunk]
        mask = rows.attention_mask[start : start + chunk]
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits[
            :, p - 1 : -1
        ]
        if temperature != 1.0:
            logits = logits / temperature
        chosen = ids[:, p:]
        logp = torch.log_softmax(logits.float(), -1).gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
        outputs.append(logp)
    out = torch.cat(outputs, 0)
    return out.masked_fill(~rows.response_mask, 0.0)


@dataclass(frozen=True)
class SampleCost:
    """Tokens processed: prompt tokens prefilled once per prompt, tokens generated."""

    prefill_tokens: int
    generated_tokens: int


def cache_keyword(model: PreTrainedModel) -> str:
    """The name under which ``model.forward`` takes and returns its KV cache: ``cache`` from
    transformers 5.2x (where ``past_key_values`` is deprecated, to go in 5.40), ``past_key_values``
    before (verl 0.9.1 pins transformers below 5.11)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.no_grad()
def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    n: int = 1,
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Rows, SampleCost]:
    """``n`` responses per prompt, prompts prefilled **once** and their KV cache shared
    (``temperature=0``: greedy).

    The prompt batch runs one forward pass; its cache is repeated ``n`` times per row
    (``DynamicCache.batch_repeat_interleave``), then tokens are drawn one step at a time from the
    cache. Rows come out grouped: row ``i * n + j`` is prompt ``i``'s ``j``-th response.
    """
    was_training = model.training
    model.eval()
    prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts)
    out = model(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=position_ids(prompt_mask),
        use_cache=True,
    )
    keyword = cache_keyword(model)
    cache = getattr(out, keyword)
    logits = out.logits[:, -1]
    if n > 1:
        cache.batch_repeat_interleave(n)
        logits = logits.repeat_interleave(n, 0)
        prompt_ids = prompt_ids.repeat_interleave(n, 0)
        prompt_mask = prompt_mask.repeat_interleave(n, 0)
    rows = prompt_ids.shape[0]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    mask = prompt_mask
    done = torch.zeros(rows, dtype=torch.bool)
    tokens = []
    next_position = mask.sum(-1, keepdim=True)
    for _ in range(max_new_tokens):
        if temperature == 0.0:
            token = logits.argmax(-1)
        else:
            probs = torch.softmax(logits.float() / temperature, -1)
            token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        token = token.masked_fill(done, pad)
        tokens.append(token)
        done = done | (token == eos)
        if bool(done.all()):
            break
        # finished rows keep feeding padding; what they attend to no longer matters
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        out = model(
            input_ids=token.unsqueeze(-1),
            attention_mask=mask,
            position_ids=next_position,
            use_cache=True,
            **{keyword: cache},
        )
        next_position = next_position + 1
        cache, logits = getattr(out, keyword), out.logits[:, -1]
    response = torch.stack(tokens, 1)
    # the response runs up to and including the first EOS (or to the length limit)
    is_eos = response == eos
    after_eos = (is_eos.long().cumsum(1) - is_eos.long()) > 0
    response_mask = ~after_eos
    response = response.masked_fill(after_eos, pad)
    model.train(was_training)
    cost = SampleCost(int(prompt_ids.shape[1] * len(prompts)), int(response_mask.sum()))
    return (
        Rows(
            torch.cat([prompt_ids, response], 1),
            torch.cat([prompt_mask, response_mask.long()], 1),
            response_mask,
            prompt_ids.shape[1],
        ),
        cost,
    )


def decode_responses(tokenizer: PreTrainedTokenizerBase, rows: Rows) -> list[str]:
    """Response text of every row, without padding or special tokens."""
    ids = rows.responses.masked_fill(~rows.response_mask, tokenizer.pad_token_id or 0)
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


def response_step_spans(rows: Rows, tag_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Split every response into steps that end at a step-tag token; what follows the last tag
    (the answer and EOS) is one more step. Returns ``lengths`` ``[B]`` and ``spans`` ``[S, 2]``
    (``[start, end)`` response positions), vectorized over the whole batch.
    """
    mask = rows.response_mask.numpy()
    ids = rows.responses.numpy()
    length = mask.sum(1)
    ends_here = (ids == tag_id) & mask
    # the last real token also ends a step unless it is a tag
    last = np.maximum(length - 1, 0)
    row_index = np.arange(len(ids))
    has_tokens = length > 0
    ends_here[row_index[has_tokens], last[has_tokens]] = True
    rows_of_end, ends = np.nonzero(ends_here)
    ends = ends + 1
    lengths = np.bincount(rows_of_end, minlength=len(ids))
    first_of_row = np.r_[True, rows_of_end[1:] != rows_of_end[:-1]]
    starts = np.where(first_of_row, 0, np.r_[0, ends[:-1]])
    return lengths, np.stack([starts, ends], 1)


def supervised_fine_tune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    responses: Sequence[str],
    epochs: int = 1,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
) -> list[float]:
    """Cross-entropy on response tokens only; AdamW with linear decay. Returns the loss curve."""
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    total = epochs * ((len(prompts) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / (total + 1))
    model.train()
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(prompts))
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            rows = encode_rows(
                tokenizer, [prompts[i] for i in index], [responses[i] for i in index]
            )
            logp = token_logprobs(model, rows)
            loss = -(logp.sum() / rows.response_mask.sum())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
    model.eval()
    return losses


# --------------------------------------------------------------------------- Trajectories bridge
INPUT_IDS, ATTENTION_MASK, PROMPT_WIDTH = "input_ids", "attention_mask", "prompt_width"


def rows_to_trajectories(
    rows: Rows,
    tag_id: int,
    episodes: dict[str, Tensor] | None = None,
    text: dict[str, list[str]] | None = None,
) -> Trajectories:
    """One trajectory per row whose steps are the response's tagged steps (plus the tail).

    Token ids and masks ride along as per-trajectory columns ``input_ids``/``attention_mask``
    ``[B, P + T]`` and ``prompt_width``, so signals can run the model on them; ``token_spans``
    are response positions.
    """
    lengths, spans = response_step_spans(rows, tag_id)
    offsets = torch.as_tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.long)
    columns = {
        INPUT_IDS: rows.input_ids,
        ATTENTION_MASK: rows.attention_mask,
        PROMPT_WIDTH: torch.full((len(lengths),), rows.prompt_width, dtype=torch.long),
        **(episodes or {}),
    }
    return Trajectories(
        offsets, {}, columns, torch.as_tensor(spans, dtype=torch.long), text=text or {}
    )


def trajectories_to_rows(batch: Trajectories) -> Rows:
    """The rows a batch made by :func:`rows_to_trajectories` came from."""
    for name in (INPUT_IDS, ATTENTION_MASK, PROMPT_WIDTH):
        if name not in batch.episodes:
            raise ValidationError(name, "this batch carries no token rows (built from an LM?)")
    ids = batch.episode(INPUT_IDS)
    mask = batch.episode(ATTENTION_MASK)
    width = int(batch.episode(PROMPT_WIDTH)[0])
    return Rows(ids, mask, mask[:, width:].bool(), width)


def span_end_positions(prompt_width: int, lengths: np.ndarray, spans: np.ndarray) -> Tensor:
    """``[S, 2]`` row/column of the last token of every span, from :func:`response_step_spans`'s
    ``lengths`` and ``spans`` (where a PRM reads its score)."""
    row = np.repeat(np.arange(len(lengths)), lengths)
    return torch.as_tensor(np.stack([row, prompt_width + spans[:, 1] - 1], 1), dtype=torch.long)


def step_end_positions(batch: Trajectories) -> Tensor:
    """``[S, 2]`` row/column (in the rows) of the last token of every step."""
    if batch.token_spans is None:
        raise ValidationError("token_spans", "this batch has no token spans")
    width = batch.episode(PROMPT_WIDTH)[batch.segments.ids]
    return torch.stack([batch.segments.ids, width + batch.token_spans[:, 1] - 1], 1)
