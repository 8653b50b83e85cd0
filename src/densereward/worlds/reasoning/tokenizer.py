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

Families that write more (``tool_calls``: ``sub``, ``mul`` and parameter letters; ``programs``:
``f``) declare it (``Family.vocabulary``); ``build_tokenizer(families=...)`` appends those words
*after* every base token, so each base token keeps its id and, for the base families, the
tokenizer (and so the policy built on it) is the one ``build_tokenizer()`` makes.

>>> extended = build_tokenizer(families=("tool_calls",))
>>> extended.convert_ids_to_tokens(extended("mul(a=7,k=2)")["input_ids"])
['mul', '(', 'a', '=', '7', ',', 'k', '=', '2', ')']
>>> extended("12+3=15ки")["input_ids"] == ids
True
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from densereward.worlds.reasoning.tasks import STEP_TAG, TaskSpec, family, sample_problems

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


def extra_vocabulary(families: Iterable[str]) -> list[str]:
    """The words ``families`` write beyond the base vocabulary, in first-seen order."""
    return list(dict.fromkeys(word for name in families for word in family(name).vocabulary))


def build_tokenizer(
    corpus: Iterable[str] | None = None, families: Iterable[str] = ()
) -> PreTrainedTokenizerFast:
    """Train a word-level vocabulary over single characters, op names and the step tag, then
    append the extra words of ``families`` (``extra_vocabulary``) with the next ids."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(
        Regex(STEP_TAG + r"|sort|rev|add|."), behavior="isolated"
    )
    tokenizer.decoder = decoders.Fuse()
    trainer = trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, min_frequency=1)
    tokenizer.train_from_iterator(corpus if corpus is not None else default_corpus(), trainer)
    extra = [word for word in extra_vocabulary(families) if word not in tokenizer.get_vocab()]
    if extra:
        vocabulary = tokenizer.get_vocab()
        for word in extra:
            vocabulary[word] = len(vocabulary)
        # the base words can never match a new multi-character word: base text holds no letter
        # but x and the base op names, which stay alternatives ahead of the new ones
        words = [w for w in extra if len(w) > 1]
        pattern = "|".join([STEP_TAG, "sort", "rev", "add", *words, "."])
        tokenizer.model = models.WordLevel(vocabulary, unk_token="<unk>")
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        padding_side="left",
    )
