"""A generative verifier: a causal LM that answers whether a step is correct, trained here, served
behind the OpenAI protocol and asked through ``judge_step`` like any LLM judge.

The reward is the probability of the "yes" token, as in RewardDance and yes/no generative reward
models: ``r_t = p(yes | x, y_≤t) / (p(yes | ·) + p(no | ·))``, read by the ``judge_step`` signal
from the first generated token's log-probabilities. The verifier is trained on exactly the
conversations that signal sends (:func:`~densereward.signals.judges.step_messages` on the
prompt file it is served with), rendered as the chat server renders them for a tokenizer without
a chat template (:func:`~densereward.judges.chat_server.plain_chat`), with the target ``yes`` for
a step before the first error and ``no`` from it on (Math-Shepherd's convention, so the first
step judged ``no`` is the predicted first error).

Training data are ProcessBench-format records (``problem``, ``steps`` — the answer after the
answer mark in the last step —, ``label``: the first wrong step or -1, ``final_answer_correct``),
which the reasoning world's exporter writes; ``negatives`` adds responses that must be judged
wrong whatever their steps say (the hardening against master keys).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from densereward.core.components import TextFormat
from densereward.core.errors import ValidationError
from densereward.core.parameters import Count, Positive
from densereward.core.segments import first_below
from densereward.core.trajectories import Trajectories
from densereward.judges.chat_server import plain_chat
from densereward.models.language import build_causal_lm, supervised_fine_tune
from densereward.signals.judges import (
    StepJudge,
    judged_batch,
    read_prompt,
    shipped_prompt,
    step_messages,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

VERIFIER_PROMPT = "judge_step_compact"
"""the shipped prompt the verifier is trained on and served with (``signals/prompts``)"""
YES, NO = "yes", "no"
SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>"]


def records_batch(records: Sequence[Mapping[str, Any]], text_format: TextFormat) -> Trajectories:
    """ProcessBench-format records as a batch a judge reads: ``text["prompt"]`` the problem,
    ``text["response"]`` the steps joined by the step tag with the answer as the untagged tail;
    step column ``label`` (1 before the first error, 0 from it on; the answer step 1 only when
    the whole solution is right) and per trajectory ``first_error``."""
    tag, mark = text_format.step_tag, text_format.answer_mark
    responses, labels, first = [], [], []
    for line, record in enumerate(records, 1):
        steps = list(record["steps"])
        if not steps:
            raise ValidationError("steps", "a record has no steps", line=line)
        body, found, answer = steps[-1].rpartition(mark)
        if not found:
            raise ValidationError("steps", f"the last step has no answer mark {mark!r}", line=line)
        steps[-1] = body
        label = int(record["label"])
        right = label == -1 and bool(record.get("final_answer_correct", True))
        responses.append("".join(s + tag for s in steps) + mark + answer)
        count = len(steps)
        step_labels = [1.0 if label == -1 or k < label else 0.0 for k in range(count)]
        labels.append(np.asarray([*step_labels, float(right)]))
        first.append(label)
    return Trajectories.from_episodes(
        {"label": labels},
        {"first_error": np.asarray(first)},
        text={"prompt": [str(r["problem"]) for r in records], "response": responses},
    )


def verifier_conversations(
    batch: Trajectories,
    text_format: TextFormat,
    prompt: str | Path | None = None,
) -> tuple[list[str], list[str]]:
    """The plain-rendered conversation of every step (what the chat server will see) and its
    target, ``yes`` where the step column ``label`` is 1 else ``no``."""
    file = read_prompt(
        prompt if prompt is not None else shipped_prompt(VERIFIER_PROMPT),
        StepJudge.sections,
        StepJudge.required,
    )
    conversations, where = step_messages(file, judged_batch(batch, text_format.step_tag))
    labels = batch.step("label").numpy()[where]
    return [plain_chat(m) for m in conversations], [YES if y > 0.5 else NO for y in labels]


def verifier_tokenizer(
    texts: Iterable[str], specials: Sequence[str] = ()
) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``texts``: each word, each other character and each of
    ``specials`` (the world's step tag) one token, ``yes`` and ``no`` among them; no chat
    template, so the server renders chats as :func:`plain_chat` does, as in training."""
    import re

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    pattern = "|".join([*(re.escape(s) for s in specials), r"[A-Za-z]+", r"."])
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    trainer = trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, min_frequency=1)
    corpus = [*texts, f"{YES} {NO} " + " ".join(specials), "0123456789+-*/=()[],#?:. "]
    tokenizer.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        padding_side="left",
    )


@dataclass(frozen=True)
class VerifierConfig:
    """How the verifier is built and trained."""

    layers: Count = 3
    width: Count = 128
    heads: Count = 4
    max_positions: Count = 256
    epochs: Count = 6
    batch_size: Count = 64
    learning_rate: Positive = 1e-3
    seed: int = 0


@dataclass(frozen=True)
class TrainedVerifier:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerFast
    losses: list[float]
    examples: int
    """conversations trained on (one per step)"""

    def save_pretrained(self, folder: str | Path) -> None:
        """The model and its tokenizer in one folder, as ``densereward judge-server`` and
        ``transformers``' ``from_pretrained`` read them."""
        self.model.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))


def train_verifier(
    batch: Trajectories,
    text_format: TextFormat,
    config: VerifierConfig = VerifierConfig(),
    negatives: Trajectories | None = None,
    prompt: str | Path | None = None,
    base: tuple[PreTrainedModel, PreTrainedTokenizerFast] | None = None,
) -> TrainedVerifier:
    """A causal LM trained to answer ``yes``/``no`` to each step of ``batch`` (and of
    ``negatives``, whose step labels say which are wrong), on the conversations the
    ``judge_step`` signal sends with ``prompt``: from scratch with its own word-level tokenizer,
    or fine-tuned from a copy of ``base`` (a model and its tokenizer, e.g. the policy: generative
    verifiers start from a language model that already reads the domain), whose vocabulary gains
    the prompt's words (:func:`extend_base`)."""
    conversations, targets = verifier_conversations(batch, text_format, prompt)
    if negatives is not None:
        extra, extra_targets = verifier_conversations(negatives, text_format, prompt)
        conversations, targets = conversations + extra, targets + extra_targets
    torch.manual_seed(config.seed)
    if base is None:
        tokenizer = verifier_tokenizer(conversations, (text_format.step_tag,))
        model = build_causal_lm(
            tokenizer,
            "gpt2",
            config.layers,
            config.width,
            config.heads,
            config.max_positions,
            seed=config.seed,
        )
    else:
        model, tokenizer = extend_base(*base, conversations)
    positions = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    longest = max(len(tokenizer(c + YES)["input_ids"]) for c in conversations) + 2
    if longest > positions:
        raise ValidationError(
            "max_positions", f"a conversation takes {longest} tokens, above {positions}"
        )
    losses = supervised_fine_tune(
        model,
        tokenizer,
        conversations,
        targets,
        epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        seed=config.seed,
    )
    return TrainedVerifier(model.eval(), tokenizer, losses, len(conversations))


def extend_base(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, conversations: Sequence[str]
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Copies of ``model`` and ``tokenizer`` whose vocabulary also holds the words of
    ``conversations``, ``yes``, ``no`` and the newline as whole tokens (new embeddings start at
    the mean of the old ones, as ``resize_token_embeddings`` does)."""
    import copy
    import re

    words = {w for c in conversations for w in re.findall(r"[A-Za-z]+", c)} | {YES, NO}
    vocabulary = tokenizer.get_vocab()
    extended = copy.deepcopy(tokenizer)
    extended.add_tokens([*sorted(w for w in words if w not in vocabulary), "\n"])
    copied = copy.deepcopy(model)
    copied.resize_token_embeddings(len(extended), mean_resizing=True)
    return copied, extended


def first_errors(scores: Trajectories, column: str, threshold: float = 0.5) -> list[int]:
    """Per trajectory of a :func:`records_batch` batch, the first tagged step (the answer step
    excluded, as ProcessBench's labels count only the solution's steps) whose score in
    ``column`` is below ``threshold``, or -1."""
    values = scores.step(column).clone().double()
    values[scores.offsets[1:] - 1] = float("inf")  # the answer step never counts
    return first_below(values, scores.segments, threshold).tolist()
