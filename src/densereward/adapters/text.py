"""A recipe's signals and transforms on text: step rewards for (prompt, response) pairs.

The reward side of every adapter (verl's reward manager, TRL's reward functions and trainer,
``densereward serve`` for OpenRLHF) starts from text and a tokenizer, not from a world. A
response is split into steps after every occurrence of the step tag; what follows the last tag
(the answer, then the end-of-sequence token) is one more step, so every response has at least one
step and the last one holds the outcome. The batch handed to the recipe is the one
``models.language.rows_to_trajectories`` builds for the reasoning world (token rows per
trajectory, ``token_spans`` per step), so every language signal (``prm``, ``progress``, ...) reads
it unchanged.

An *outcome function* grades whole responses: ``f(prompts, responses, labels) -> [B]`` numbers
(OpenRLHF's ``reward_func`` form; TRL's reward functions adapt to it). Its values are the
trajectories' ``outcome``; when they all lie in [0, 1] they are also the ``verdict`` that gates
read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densereward.core.components import Needs, SignalContext, TextFormat
from densereward.core.errors import ConfigError, ValidationError
from densereward.core.trajectories import GROUP, OUTCOME, VERDICT, Trajectories
from densereward.models.language import (
    ATTENTION_MASK,
    INPUT_IDS,
    PROMPT_WIDTH,
    encode_prompts,
    pad_right,
)
from densereward.pipeline import Pipeline, Recipe
from densereward.signals.functions import load_function

OutcomeFunction = Callable[[list[str], list[str], list[Any]], Sequence[float]]
"""``f(prompts, responses, labels) -> [B]``: one number per response."""


@dataclass(frozen=True)
class StepRewards:
    """Step rewards of a batch of responses, stored flat (CSR over responses).

    ``rewards[offsets[i]:offsets[i+1]]`` are response i's step rewards (the recipe's process
    column; zeros for an outcome-only recipe), ``char_ends`` the character in the response where
    each step ends (exclusive), ``outcome`` the outcome function's value per response (zeros
    without one). The total reward of a response is ``outcome + sum(steps)``.
    """

    offsets: np.ndarray
    rewards: np.ndarray
    char_ends: np.ndarray
    outcome: np.ndarray
    batch: Trajectories

    def __len__(self) -> int:
        return len(self.outcome)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def totals(self) -> np.ndarray:
        """``outcome + Σ steps`` per response."""
        sums = np.add.reduceat(self.rewards, self.offsets[:-1]) if len(self.rewards) else 0.0
        return self.outcome + np.where(self.lengths > 0, sums, 0.0)

    def per_response(self) -> list[list[float]]:
        return [row.tolist() for row in np.split(self.rewards, self.offsets[1:-1])]


class TextScorer:
    """Step rewards for text from a recipe's signals and transforms (its estimator is not run).

    ``models`` are what the recipe's signals look up by name (a ``ProcessRewardModel`` for
    ``prm``); ``column`` is the step column read after the transforms (default: the estimator's
    ``process`` or ``reward`` column). The scorer is not thread-safe: signals may keep state.
    """

    def __init__(
        self,
        recipe: Recipe,
        tokenizer: Any,
        *,
        step_tag: str = "\n",
        answer_mark: str = "#",
        models: Mapping[str, Any] | None = None,
        outcome: OutcomeFunction | None = None,
        column: str | None = None,
    ) -> None:
        if not step_tag:
            raise ConfigError("step_tag", "must be a non-empty string")
        if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
            raise ConfigError("tokenizer", "needs a pad token and an end-of-sequence token")
        self.recipe = recipe
        self.tokenizer = tokenizer
        self.step_tag = step_tag
        self.outcome = outcome
        self.column = column or _process_column(recipe)
        context = SignalContext(
            models=dict(models or {}),
            tokenizer=tokenizer,
            text_format=TextFormat(step_tag, answer_mark),
        )
        unmet = recipe.needs().unmet(
            Needs(models=tuple(context.models), text=True),
            "the models passed (models=, --model NAME=DIR)",
        )
        if unmet is not None:
            raise ConfigError("models", unmet)
        self.pipeline = Pipeline(recipe, context)

    @staticmethod
    def from_files(
        recipe: str | Path | Recipe,
        tokenizer: str | Path | Any,
        *,
        models: Mapping[str, str | Path | Any] | None = None,
        outcome: str | OutcomeFunction | None = None,
        step_tag: str = "\n",
        answer_mark: str = "#",
    ) -> TextScorer:
        """From a recipe file, a tokenizer folder, process-reward-model folders (by the name the
        recipe's signals use) and an outcome function's import path (``module:function``); each
        may also be the loaded object (a ``Recipe``, a tokenizer, a model, a callable)."""
        if isinstance(recipe, (str, Path)):
            recipe = Recipe.from_yaml(recipe)
        if isinstance(tokenizer, (str, Path)):
            from transformers import AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
            except (OSError, ValueError) as error:
                raise ConfigError("tokenizer", f"cannot load {tokenizer}: {error}") from None
        loaded = {}
        for name, model in (models or {}).items():
            if isinstance(model, (str, Path)):
                from densereward.models.prm import ProcessRewardModel

                model = ProcessRewardModel.from_pretrained(model)
            loaded[name] = model
        return TextScorer(
            recipe,
            tokenizer,
            step_tag=step_tag,
            answer_mark=answer_mark,
            models=loaded,
            outcome=load_function(outcome, "outcome") if isinstance(outcome, str) else outcome,
        )

    def close(self) -> None:
        self.pipeline.close()

    def batch(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        labels: Sequence[Any] | None = None,
        groups: Sequence[int] | None = None,
        outcome: Sequence[float] | None = None,
    ) -> Trajectories:
        """The ``Trajectories`` the recipe runs on: token rows, step spans, outcome, group.

        ``outcome`` (one number per response) replaces the outcome function, for callers that
        graded the responses already (verl's ``compute_score``, TRL's reward functions)."""
        if len(prompts) != len(responses):
            raise ValidationError(
                "prompts", f"{len(prompts)} prompts for {len(responses)} responses"
            )
        labels = list(labels) if labels is not None else [None] * len(responses)
        if len(labels) != len(responses):
            raise ValidationError("labels", f"{len(labels)} labels for {len(responses)} responses")
        tokenizer = self.tokenizer
        prompt_ids, prompt_mask = encode_prompts(tokenizer, list(prompts))
        encoded = tokenizer(list(responses), add_special_tokens=False, return_offsets_mapping=True)
        pieces = [[*ids, tokenizer.eos_token_id] for ids in encoded["input_ids"]]
        token_ends = [
            np.array([end for _, end in offsets] + [len(text)], dtype=np.int64)
            for offsets, text in zip(encoded["offset_mapping"], responses, strict=True)
        ]
        char_ends = [step_char_ends(text, self.step_tag) for text in responses]
        lengths = np.array([len(ends) for ends in char_ends], dtype=np.int64)
        last_tokens = np.concatenate(
            [
                step_end_tokens(ends, steps)
                for ends, steps in zip(token_ends, char_ends, strict=True)
            ]
        )
        first_of_row = np.r_[0, np.cumsum(lengths)[:-1]]
        starts = np.r_[0, last_tokens[:-1] + 1]
        starts[first_of_row] = 0
        spans = np.stack([starts, last_tokens + 1], 1)
        response, mask = pad_right(pieces, tokenizer.pad_token_id)
        episodes: dict[str, torch.Tensor] = {
            INPUT_IDS: torch.cat([prompt_ids, response], 1),
            ATTENTION_MASK: torch.cat([prompt_mask, mask], 1),
            PROMPT_WIDTH: torch.full((len(pieces),), prompt_ids.shape[1], dtype=torch.long),
        }
        if outcome is not None or self.outcome is not None:
            values = np.asarray(
                outcome
                if outcome is not None
                else self.outcome(list(prompts), list(responses), labels),  # type: ignore[misc]
                dtype=np.float64,
            )
            if values.shape != (len(responses),):
                raise ValidationError(
                    OUTCOME,
                    f"the outcome has shape {list(values.shape)}, expected [{len(responses)}]",
                )
            episodes[OUTCOME] = torch.from_numpy(values)
            if bool(np.all((values >= 0) & (values <= 1))):
                episodes[VERDICT] = torch.from_numpy(values.copy())
        if groups is not None:
            episodes[GROUP] = torch.as_tensor(np.asarray(groups, dtype=np.int64))
        offsets = torch.as_tensor(np.r_[0, np.cumsum(lengths)], dtype=torch.long)
        return Trajectories(
            offsets,
            {"char_end": torch.as_tensor(np.concatenate(char_ends))},
            episodes,
            torch.as_tensor(spans, dtype=torch.long),
            text={"prompt": list(prompts), "response": list(responses)},
        )

    def __call__(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        labels: Sequence[Any] | None = None,
        groups: Sequence[int] | None = None,
        iteration: int = 0,
        outcome: Sequence[float] | None = None,
    ) -> StepRewards:
        batch, _ = self.pipeline.transform(
            self.batch(prompts, responses, labels, groups, outcome), iteration, torch.float32
        )
        rewards = (
            batch.step(self.column).double().cpu().numpy()
            if self.column in batch.steps
            else np.zeros(batch.num_steps)
        )
        graded = batch.outcome
        return StepRewards(
            batch.offsets.cpu().numpy(),
            rewards,
            batch.step("char_end").cpu().numpy(),
            graded.double().cpu().numpy() if graded is not None else np.zeros(len(batch)),
            batch,
        )


def step_char_ends(text: str, step_tag: str) -> np.ndarray:
    """Exclusive end of every step of ``text``: after each ``step_tag``, then the end of the text
    (the untagged tail, possibly empty: the end-of-sequence token closes it).

    >>> step_char_ends("1+2=3\\n3*2=6\\n#6", "\\n").tolist()
    [6, 12, 14]
    """
    ends = []
    start = text.find(step_tag)
    while start != -1:
        ends.append(start + len(step_tag))
        start = text.find(step_tag, start + len(step_tag))
    ends.append(len(text))
    return np.array(ends, dtype=np.int64)


def step_end_tokens(token_ends: np.ndarray, char_ends: np.ndarray) -> np.ndarray:
    """The token each step ends at: the first token whose end reaches the step's end character;
    the tail (the last step) always ends at the last token (the end-of-sequence token).

    >>> step_end_tokens(np.array([2, 3, 5, 5]), np.array([3, 5])).tolist()
    [1, 3]
    """
    last = np.minimum(np.searchsorted(token_ends, char_ends, side="left"), len(token_ends) - 1)
    last[-1] = len(token_ends) - 1
    return last


def decode_with_ends(
    tokenizer: Any, rows: Sequence[Sequence[int]]
) -> tuple[list[str], list[np.ndarray]]:
    """Each row decoded token by token: the text (the tokens' strings joined; special tokens such
    as EOS decode to nothing) and the exclusive character end of every token in it, so a
    character position in the text maps back to the token that holds it
    (:func:`step_end_tokens`)."""
    texts, ends = [], []
    for ids in rows:
        pieces = tokenizer.batch_decode([[int(i)] for i in ids], skip_special_tokens=True)
        ends.append(np.cumsum([len(p) for p in pieces], dtype=np.int64))
        texts.append("".join(pieces))
    return texts, ends


def _process_column(recipe: Recipe) -> str:
    estimator = recipe.estimator
    for key in ("process", "reward"):
        value = estimator.get(key)
        if isinstance(value, str):
            return value
    return "reward"
