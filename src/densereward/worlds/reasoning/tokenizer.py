"""A character-level tokenizer for the reasoning world, built locally with ``tokenizers``.

Every digit and symbol is one token, operation names (``sort``, ``rev``, ``add``) and the step
tag ``ки`` are single tokens. The result is a ``transformers.PreTrainedTokenizerFast``, so the
rest of the code treats it exactly like any Hugging Face tokenizer.

>>> tokenizer = build_tokenizer()
>>> ids = tokenizer("12+3=15ки")["input_ids"]
>>> tokenizer.convert_ids_to_tokens(ids)
['1', '2', '+', '3', '=', '1', '5', 'ки']
>>> tokenizer.decode(ids)
'12+3=15ки'
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from densereward.worlds.reasoning.tasks import STEP_TAG, TaskSpec, sample_problems

if TYPE_CHECKING:  # transformers costs a second to import: only when a tokenizer is built
    from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<unk>", "<bos>", "<eos>"]
PROMPT_END = "="
"""The prompt is followed by ``=?`` then the response: ``(1+2)*2=?1+2=3ки3*2=6ки#6``."""


def default_corpus(n: int = 2000, seed: int = 0) -> list[str]:
    spec = TaskSpec(("arithmetic", "equation", "lists"))
    texts = []
    for sample in sample_problems(spec, n, seed):
        texts.append(sample.problem.prompt + "=?" + sample.problem.response)
    # every symbol a corruption or a model might write, even if the sample missed it
    texts.append("0123456789+-*/=()[],#?x " + STEP_TAG)
    return texts


def build_tokenizer(corpus: Iterable[str] | None = None) -> PreTrainedTokenizerFast:
    """Train a word-level vocabulary over single characters, op names and the step tag."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(
        Regex(STEP_TAG + r"|sort|rev|add|."), behavior="isolated"
    )
    tokenizer.decoder = decoders.Fuse()
    trainer = trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, min_frequency=1)
    tokenizer.train_from_iterator(corpus if corpus is not None else default_corpus(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        padding_side="left",
    )
