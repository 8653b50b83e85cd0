"""densereward in TRL (1.16): reward functions, a GRPO trainer on per-token advantages, and PRMs.

Three pieces, each usable alone:

- :func:`reward_function`: a recipe's step rewards folded into the one number per completion that
  ``GRPOTrainer(reward_funcs=...)`` expects (``total``, ``sum``, ``mean``, ``min``, ``last`` of the
  step rewards, or ``outcome``).
- :class:`DenseRewardGRPOTrainer`: TRL's ``GRPOTrainer`` with its per-completion advantage
  replaced by a recipe's per-step advantage spread over each step's tokens, ``[B, T]``.
  Generation, KL, clipping, logging and accelerate stay TRL's.
- :func:`train_stepwise_prm`: a process reward model trained on TRL's stepwise-supervision rows
  (``prompt``, ``completions``, ``labels``), which TRL 1.16 no longer trains itself (its
  ``PRMTrainer`` is gone), with :func:`densereward.models.prm.train_prm`.

Facts about TRL 1.16.0 this module relies on (read in ``trl/trainer/grpo_trainer.py``):

- A callable reward is called ``f(prompts=, completions=, completion_ids=, trainer_state=,
  log_extra=, log_metric=, **columns)`` where ``columns`` are the dataset's other columns, one
  value per completion; ``None`` becomes NaN. Its name in the logs is ``f.__name__``.
- ``RepeatSampler`` yields each prompt index ``num_generations`` times in a row, and TRL groups
  rewards with ``rewards.view(-1, num_generations)``: completion ``i`` (global index) belongs to
  group ``i // num_generations``.
- TRL's advantage is ``(R_i - mean_g R) / (std_g R + 1e-4)`` with Bessel's (unbiased) std
  (``scale_rewards="group"``, the default). densereward's ``grpo`` estimator gives exactly that
  with ``eps: 1e-4, unbiased_std: true`` (its default eps is 1e-6).
- ``_compute_loss`` unsqueezes ``advantages`` only when it is 1-D, so a ``[B, T]`` tensor
  multiplies the per-token ratios directly; ``shuffle_sequence_dict`` and ``split_tensor_dict``
  index dim 0 only. (``off_policy_mask_threshold`` and ``loss_type="vespo"`` then act per token
  instead of per sequence: they were written for ``[B, 1]``.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from densereward.adapters.text import StepRewards, TextScorer, decode_with_ends, step_end_tokens
from densereward.core.errors import ConfigError, ValidationError
from densereward.core.trajectories import Trajectories
from densereward.io.trl import TRL_KEYS, read_trl, trl_from_records
from densereward.models.language import (
    ATTENTION_MASK,
    INPUT_IDS,
    PROMPT_WIDTH,
    Rows,
    encode_prompts,
    pad_right,
)
from densereward.models.prm import ProcessRewardModel, train_prm
from densereward.pipeline import Recipe, checked_estimate

if TYPE_CHECKING:
    from transformers import PreTrainedModel
    from trl import GRPOTrainer
else:
    try:  # the extra ``densereward[trl]``: reward functions and PRM training work without it
        from trl import GRPOTrainer
    except ImportError:  # pragma: no cover - exercised only without the extra
        GRPOTrainer = object

AGGREGATES = ("total", "sum", "mean", "min", "last", "outcome")
"""How :func:`reward_function` folds a completion's step rewards ``r_1..r_K`` and outcome ``o``:
``total = o + Σ r_k``, ``sum = Σ r_k``, ``mean = Σ r_k / K``, ``min = min r_k``, ``last = r_K``,
``outcome = o``."""

TOKEN_END = "token_end"
"""Step column of :class:`DenseRewardGRPOTrainer`'s batch: the exclusive end of each step in the
completion's own tokens (the policy's ids, not the scorer's)."""

_TOKEN_ROWS = (INPUT_IDS, ATTENTION_MASK, PROMPT_WIDTH)


# ----------------------------------------------------------------------------- text of a sample
def completion_text(completion: str | Sequence[Mapping[str, Any]]) -> str:
    """A TRL completion as text: the string itself, or the content of its assistant messages
    (a conversational completion is a list of ``{"role", "content"}`` dicts), joined.

    >>> completion_text([{"role": "assistant", "content": "1+2=3\\n#3"}])
    '1+2=3\\n#3'
    """
    if isinstance(completion, str):
        return completion
    return "".join(
        _content(message)
        for message in completion
        if message.get("role", "assistant") == "assistant"
    )


def prompt_text(prompt: str | Sequence[Mapping[str, Any]]) -> str:
    """A TRL prompt as text: the string, or its messages' contents joined by newlines (the scorer
    reads what the prompt says, not a chat template's markup)."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(_content(message) for message in prompt)


def _content(message: Mapping[str, Any]) -> str:
    content = message.get("content", "")
    if isinstance(content, str):
        return content
    # multimodal form: [{"type": "text", "text": ...}, {"type": "image", ...}]
    return "".join(part.get("text", "") for part in content if isinstance(part, Mapping))


def consecutive_groups(prompts: Sequence[Any]) -> np.ndarray:
    """Group labels for TRL's layout: a new group starts wherever the prompt changes (TRL repeats
    each prompt ``num_generations`` times in a row).

    >>> consecutive_groups(["a", "a", "b", "b", "a"]).tolist()
    [0, 0, 1, 1, 2]
    """
    labels = np.zeros(len(prompts), dtype=np.int64)
    for i in range(1, len(prompts)):
        labels[i] = labels[i - 1] + (prompts[i] != prompts[i - 1])
    return labels


# ----------------------------------------------------------------------------- reward functions
def aggregate_step_rewards(scored: StepRewards, aggregate: str = "total") -> np.ndarray:
    """One number per response from its step rewards (see :data:`AGGREGATES`), ``[B]``.

    Every response has at least one step (the tail after the last tag), so every reduction is
    defined.

    >>> batch = Trajectories.from_episodes({"r": [[0.5, 0.25], [1.0]]})
    >>> scored = StepRewards(np.array([0, 2, 3]), np.array([0.5, 0.25, 1.0]), np.array([3, 5, 2]),
    ...                      np.array([1.0, 0.0]), batch)
    >>> [aggregate_step_rewards(scored, a).tolist() for a in ("total", "mean", "min", "last")]
    [[1.75, 1.0], [0.375, 1.0], [0.25, 1.0], [0.25, 1.0]]
    """
    if aggregate not in AGGREGATES:
        raise ConfigError("aggregate", f"unknown {aggregate!r}; known: {', '.join(AGGREGATES)}")
    if aggregate == "total":
        return scored.totals
    if aggregate == "outcome":
        return scored.outcome
    starts = scored.offsets[:-1]
    if aggregate == "last":
        return scored.rewards[scored.offsets[1:] - 1]
    if aggregate == "min":
        return np.minimum.reduceat(scored.rewards, starts)
    sums = np.add.reduceat(scored.rewards, starts)
    return sums if aggregate == "sum" else sums / scored.lengths


def reward_function(
    scorer: TextScorer,
    aggregate: str = "total",
    *,
    label_column: str | None = None,
    name: str | None = None,
) -> Callable[..., list[float]]:
    """A TRL reward function (``GRPOTrainer(reward_funcs=[...])``) from a densereward scorer.

    ``f(prompts, completions, completion_ids, trainer_state, log_extra, log_metric, **columns)
    -> [B]``: each completion's step rewards from ``scorer`` folded by ``aggregate`` (see
    :data:`AGGREGATES`). Conversational completions are read by their assistant content. The
    outcome function's labels come from the dataset column ``label_column``; responses to the
    same (consecutive) prompt form a group; ``trainer_state.global_step`` is the iteration the
    recipe's signals see. ``__name__`` (TRL's log key ``rewards/<name>/mean``) is ``name`` or
    ``densereward_<aggregate>``.

    Used as::

        scorer = TextScorer(recipe, tokenizer, step_tag="ки", models={"prm": prm}, outcome=grade)
        trainer = GRPOTrainer(model, reward_funcs=[reward_function(scorer, "total",
                              label_column="answer")], args=config, train_dataset=prompts)
    """
    if aggregate not in AGGREGATES:
        raise ConfigError("aggregate", f"unknown {aggregate!r}; known: {', '.join(AGGREGATES)}")

    def score(
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Any = None,
        trainer_state: Any = None,
        log_extra: Any = None,
        log_metric: Any = None,
        **columns: Any,
    ) -> list[float]:
        labels = _labels(columns, label_column, len(completions))
        texts = [prompt_text(p) for p in prompts]
        iteration = int(getattr(trainer_state, "global_step", 0) or 0)
        scored = scorer(
            texts,
            [completion_text(c) for c in completions],
            labels,
            consecutive_groups(texts).tolist(),
            iteration,
        )
        return [float(v) for v in aggregate_step_rewards(scored, aggregate)]

    score.__name__ = score.__qualname__ = name or f"densereward_{aggregate}"
    return score


def _labels(columns: Mapping[str, Any], label_column: str | None, count: int) -> list[Any] | None:
    if label_column is None:
        return None
    if label_column not in columns:
        known = ", ".join(sorted(columns)) or "none"
        raise ConfigError("label_column", f"no dataset column {label_column!r} (have: {known})")
    labels = list(columns[label_column])
    if len(labels) != count:
        raise ValidationError(label_column, f"{len(labels)} labels for {count} completions")
    return labels


# ----------------------------------------------------------------------------- per-token advantages
def spread_over_tokens(
    step_values: Tensor, offsets: Tensor, token_ends: Tensor, mask: Tensor
) -> Tensor:
    """Each step's value on each of its tokens: ``out[i, t] = v_k`` for the step ``k`` of row
    ``i`` with ``token_end_{k-1} <= t < token_end_k``, times ``mask[i, t]``; ``[B, T]``.

    ``step_values`` ``[S]``, ``offsets`` ``[B + 1]`` (CSR over rows), ``token_ends`` ``[S]`` the
    exclusive end token of each step (non-decreasing within a row; a step whose end equals the
    previous one covers no token). Tokens after the last step's end get 0. One ``searchsorted``
    over keys ``row * T + t``: no loop over rows or tokens.

    >>> spread_over_tokens(torch.tensor([1.0, 2.0, 5.0]), torch.tensor([0, 2, 3]),
    ...                    torch.tensor([2, 3, 1]), torch.ones(2, 4)).tolist()
    [[1.0, 1.0, 2.0, 0.0], [5.0, 0.0, 0.0, 0.0]]
    """
    rows, width = mask.shape
    device = mask.device
    lengths = offsets[1:] - offsets[:-1]
    row_of_step = torch.repeat_interleave(torch.arange(rows, device=device), lengths.to(device))
    # the last token of step k is token_end_k - 1; the step holding token t is the first step of
    # its row whose last token is >= t
    step_keys = row_of_step * width + token_ends.to(device) - 1
    token_keys = torch.arange(rows * width, device=device)
    found = torch.searchsorted(step_keys, token_keys)
    index = found.clamp(max=max(len(step_keys) - 1, 0))
    inside = (found < len(step_keys)) & (row_of_step[index] == token_keys // width)
    values = step_values.to(device)[index].masked_fill(~inside, 0.0)
    return values.reshape(rows, width) * mask.to(values.dtype)


def completion_lengths(
    completion_ids: Tensor, completion_mask: Tensor, pad_token_id: int
) -> Tensor:
    """Tokens each completion holds, ``[B]``: ``completion_mask``'s count, or for a row TRL masked
    out entirely (``mask_truncated_completions``) the row up to its last non-padding token."""
    counted = completion_mask.sum(1)
    real = completion_ids != pad_token_id
    positions = torch.arange(1, completion_ids.shape[1] + 1, device=completion_ids.device)
    last_real = (real * positions).amax(1)
    return torch.where(counted > 0, counted, last_real)


class DenseRewardGRPOTrainer(GRPOTrainer):
    """TRL's ``GRPOTrainer`` trained on a recipe's per-step advantages, spread over tokens.

    After TRL generates and scores a batch (``super()._generate_and_score_completions``), each
    completion becomes one trajectory: its text (decoded token by token from the policy's own
    ``completion_ids``, special tokens decoding to nothing) goes to ``scorer``, whose signals and transforms
    give step rewards; the steps end after each step tag, then at the last token, and are mapped
    onto the completion's tokens through the decoded characters (``decode_with_ends``,
    ``step_end_tokens``), so a step ends at the policy token that holds its last character
    whatever tokenizer the scorer uses. ``group`` is ``i // num_generations`` (TRL's layout), and
    ``outcome`` is the scorer's outcome function when it has one, otherwise TRL's reward
    ``Σ_j w_j R_j`` (its ``reward_funcs`` weighted by ``reward_weights``). ``recipe``'s estimator
    turns that batch into advantages ``A_{i,k}``, and ``out["advantages"][i, t] = A_{i,k}`` for
    every token ``t`` of step ``k`` (zero on padding): TRL's loss takes ``[B, T]`` as it is.

    Conventions: with ``estimator: {kind: grpo, reward: null, eps: 1e-4, unbiased_std: true}``
    and no scorer outcome function, the advantages are TRL's own, broadcast over
    ``completion_mask`` (TRL's eps is 1e-4 and its std unbiased; densereward's ``grpo`` defaults
    to eps 1e-6). TRL's ``scale_rewards`` and ``multi_objective_aggregation`` no longer apply:
    the recipe's estimator normalises. A completion every reward function returned ``None`` for
    gets outcome 0 in the estimator and advantage 0 in the loss (TRL also leaves it out of its
    group's mean). An estimator that selects trajectories (``Estimate.keep``) zeroes the others.

    Distributed training: the scorer runs on each process's own completions (a group-wise
    *transform* sees only the local part of a group that straddles processes); the step columns
    and episode columns are then gathered with ``accelerate``'s ``gather_object``, the estimator
    runs on the whole generation batch, in process order, as TRL's rewards are, and each process
    keeps its own steps. Only the single-process path is tested.

    ``label_column`` names the dataset column the outcome function reads as labels. The batch the
    estimator saw, with its ``advantage`` column, is kept in ``last_batch``.
    """

    def __init__(
        self,
        *args: Any,
        scorer: TextScorer,
        recipe: Recipe | str | Path | None = None,
        label_column: str | None = None,
        **kwargs: Any,
    ) -> None:
        if GRPOTrainer is object:  # pragma: no cover
            raise ImportError("DenseRewardGRPOTrainer needs TRL: pip install 'densereward[trl]'")
        super().__init__(*args, **kwargs)
        self.scorer = scorer
        if isinstance(recipe, (str, Path)):
            recipe = Recipe.from_yaml(recipe)
        self.recipe = recipe if recipe is not None else scorer.recipe
        _, _, self.estimator = self.recipe.build()
        self.label_column = label_column
        self.last_batch: Trajectories | None = None
        self._rewards_per_func: Tensor | None = None

    # TRL computes (and gathers) the rewards inside its own method: keep them for the outcome
    def _calculate_rewards(self, inputs: Any, prompts: Any, completions: Any, ids: Any) -> Tensor:
        rewards_per_func: Tensor = super()._calculate_rewards(inputs, prompts, completions, ids)
        self._rewards_per_func = rewards_per_func
        return rewards_per_func

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = super()._generate_and_score_completions(inputs)
        out["advantages"] = self.token_advantages(inputs, out)
        return out

    def token_advantages(self, inputs: list[dict[str, Any]], out: Mapping[str, Any]) -> Tensor:
        """The recipe's advantages ``[B, T]`` for a batch TRL generated (see the class docstring)."""
        completion_ids: Tensor = out["completion_ids"]
        mask: Tensor = out["completion_mask"]
        if "tool_mask" in out:
            mask = mask * out["tool_mask"]
        count = completion_ids.shape[0]
        tokenizer = self._tokenizer
        lengths = completion_lengths(completion_ids, mask, tokenizer.pad_token_id).tolist()
        # special tokens (EOS, padding the policy wrote) decode to nothing, so they end where the
        # text before them does and a step's end character never lands on one
        texts, token_ends = decode_with_ends(
            tokenizer, [row[:n] for row, n in zip(completion_ids.tolist(), lengths, strict=True)]
        )

        mode = "train" if self.model is not None and self.model.training else "eval"
        generations = self.num_generations if mode == "train" else self.num_generations_eval
        first = self.accelerator.process_index * count
        groups = (first + np.arange(count)) // generations
        prompts = [prompt_text(x["prompt"]) for x in inputs]
        labels = [x[self.label_column] for x in inputs] if self.label_column is not None else None
        outcome = self._trl_reward(first, count) if self.scorer.outcome is None else None
        batch = self.scorer.batch(prompts, texts, labels, groups, outcome)
        scored, _ = self.scorer.pipeline.transform(batch, self.state.global_step, torch.float32)

        step_chars = np.split(
            scored.step("char_end").cpu().numpy(), scored.offsets[1:-1].cpu().numpy()
        )
        policy_ends = torch.as_tensor(
            np.concatenate(
                [
                    step_end_tokens(ends, chars) + 1 if len(ends) else np.zeros(len(chars), int)
                    for ends, chars in zip(token_ends, step_chars, strict=True)
                ]
            ),
            dtype=torch.long,
        )
        local = Trajectories(
            scored.offsets,
            {**scored.steps, TOKEN_END: policy_ends},
            {k: v for k, v in scored.episodes.items() if k not in _TOKEN_ROWS},
            trusted=True,
        )
        estimated, step_start = self._estimate(local)
        self.last_batch = estimated
        advantages = estimated.step("advantage")[step_start : step_start + local.num_steps]
        if "keep" in estimated.episodes:
            keep = estimated.episode("keep")[first : first + count].to(advantages.dtype)
            advantages = advantages * torch.repeat_interleave(keep, local.lengths)
        self._log_steps(mode, local)
        return spread_over_tokens(
            advantages.to(torch.float32), local.offsets, policy_ends, mask.cpu()
        ).to(completion_ids.device)

    def _trl_reward(self, first: int, count: int) -> list[float]:
        """TRL's summed reward of this process's completions; NaN (unscorable) becomes 0."""
        if self._rewards_per_func is None:
            raise ConfigError("scorer", "has no outcome function and TRL computed no rewards")
        per_func = self._rewards_per_func[first : first + count]
        weights = self.reward_weights.to(per_func.device)
        rewards = (per_func * weights.unsqueeze(0)).nansum(1)
        rewards = rewards.masked_fill(torch.isnan(per_func).all(1), 0.0)
        return rewards.detach().cpu().double().tolist()

    def _estimate(self, local: Trajectories) -> tuple[Trajectories, int]:
        """The estimator over the whole generation batch; returns it and where this process's
        steps start in it."""
        if self.accelerator.num_processes == 1:
            estimate = checked_estimate(self.estimator, local, torch.float32)
            out = local.with_steps(advantage=estimate.advantages)
            if estimate.keep is not None:
                out = out.with_episodes(keep=estimate.keep)
            return out, 0
        from accelerate.utils import gather_object

        payload: dict[str, Any] = {
            "lengths": local.lengths.cpu().numpy(),
            "steps": {k: v.cpu().numpy() for k, v in local.steps.items()},
            "episodes": {k: v.cpu().numpy() for k, v in local.episodes.items()},
        }
        parts: list[dict[str, Any]] = gather_object([payload])
        lengths = np.concatenate([p["lengths"] for p in parts])
        whole = Trajectories(
            torch.as_tensor(np.r_[0, np.cumsum(lengths)]),
            {
                k: torch.as_tensor(np.concatenate([p["steps"][k] for p in parts]))
                for k in local.steps
            },
            {
                k: torch.as_tensor(np.concatenate([p["episodes"][k] for p in parts]))
                for k in local.episodes
            },
            trusted=True,
        )
        estimate = checked_estimate(self.estimator, whole, torch.float32)
        out = whole.with_steps(advantage=estimate.advantages)
        if estimate.keep is not None:
            out = out.with_episodes(keep=estimate.keep)
        start = int(sum(p["lengths"].sum() for p in parts[: self.accelerator.process_index]))
        return out, start

    def _log_steps(self, mode: str, local: Trajectories) -> None:
        column = self.scorer.column
        self._metrics[mode]["densereward/steps"].append(float(local.lengths.double().mean()))
        if column in local.steps:
            self._metrics[mode][f"densereward/{column}/mean"].append(
                float(local.step(column).double().mean())
            )


# ----------------------------------------------------------------------------- stepwise PRMs
@dataclass(frozen=True)
class StepwiseExamples:
    """Stepwise-supervision rows laid out as a :class:`TextScorer` lays out text: ``rows``
    (``BOS + prompt``, then ``step_1 + sep + ... + step_K + sep``, then EOS), ``positions``
    ``[S, 2]`` the row and column of each step's last token (its separator's) and ``labels``
    ``[S]`` (1.0 / 0.0)."""

    rows: Rows
    positions: Tensor
    labels: Tensor


def stepwise_examples(dataset: Any, tokenizer: Any, separator: str = "\n") -> StepwiseExamples:
    """TRL's stepwise rows (a ``datasets.Dataset``, a list of dicts or a ``.jsonl``/``.parquet``
    path, see ``io.trl``) tokenized for a PRM: each step followed by ``separator``, its label at
    the step's last token (the separator's), every other token unlabelled (TRL's ``-100``).

    The rows are those ``TextScorer(step_tag=separator)`` builds for the response
    ``"".join(step + separator)``, so a PRM trained here reads the same positions when it scores
    (the scorer's tail step after the last separator, at EOS, has no label here).
    """
    if not separator:
        raise ConfigError("separator", "must be a non-empty string")
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ConfigError("tokenizer", "needs a pad token and an end-of-sequence token")
    batch = _stepwise_batch(dataset)
    prompts = list(batch.text["prompt"])
    steps = np.split(np.asarray(batch.step_text["completion"], dtype=object), batch.offsets[1:-1])
    responses = ["".join(step + separator for step in row) for row in steps]
    prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts)
    encoded = tokenizer(responses, add_special_tokens=False, return_offsets_mapping=True)
    pieces = [[*ids, tokenizer.eos_token_id] for ids in encoded["input_ids"]]
    columns = []
    for offsets, row, text in zip(encoded["offset_mapping"], steps, responses, strict=True):
        token_ends = np.array([end for _, end in offsets] + [len(text)], dtype=np.int64)
        char_ends = np.cumsum([len(step) + len(separator) for step in row])
        # the appended end of text stands for the scorer's tail step, which takes the last token
        columns.append(step_end_tokens(token_ends, np.append(char_ends, len(text)))[:-1])
    response, mask = pad_right(pieces, tokenizer.pad_token_id)
    prompt_width = prompt_ids.shape[1]
    row_of_step = np.repeat(np.arange(len(pieces)), batch.lengths.numpy())
    positions = np.stack([row_of_step, prompt_width + np.concatenate(columns)], 1)
    return StepwiseExamples(
        Rows(
            torch.cat([prompt_ids, response], 1),
            torch.cat([prompt_mask, mask], 1),
            mask.bool(),
            prompt_width,
        ),
        torch.as_tensor(positions, dtype=torch.long),
        batch.step("label").to(torch.float32),
    )


def _stepwise_batch(dataset: Any) -> Trajectories:
    if isinstance(dataset, Trajectories):
        return dataset
    if isinstance(dataset, (str, Path)):
        return read_trl(dataset)
    records = [{k: row[k] for k in TRL_KEYS if k in row} for row in dataset]
    return trl_from_records(list(enumerate(records, start=1)), "dataset")


def train_stepwise_prm(
    dataset: Any,
    backbone: PreTrainedModel | str | Path,
    tokenizer: Any,
    separator: str = "\n",
    *,
    epochs: int = 3,
    batch_size: int = 64,
    learning_rate: float = 5e-4,
    seed: int = 0,
    losses: list[float] | None = None,
) -> ProcessRewardModel:
    """A process reward model trained on TRL's stepwise supervision (what ``trl.PRMTrainer`` did).

    Step-wise binary cross-entropy ``-Σ_k [y_k log σ(s_k) + (1 - y_k) log(1 - σ(s_k))]`` with
    ``s_k = w·h_k + b`` read at step k's last token (:func:`stepwise_examples`), by
    :func:`densereward.models.prm.train_prm` over a copy of ``backbone`` (any Hugging Face causal
    LM, or a local folder holding one). The loss per batch is appended to ``losses`` when given.
    Save it with ``save_pretrained``; ``ProcessRewardModel.from_pretrained`` reloads it, and a
    ``TextScorer(step_tag=separator, models={"prm": model})`` scores with it (signal ``prm``).
    """
    if isinstance(backbone, (str, Path)):
        from transformers import AutoModelForCausalLM

        backbone = AutoModelForCausalLM.from_pretrained(str(backbone), local_files_only=True)
    examples = stepwise_examples(dataset, tokenizer, separator)
    torch.manual_seed(seed)
    model = ProcessRewardModel(backbone)
    curve = train_prm(
        model,
        examples.rows,
        examples.positions,
        examples.labels,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
    )
    if losses is not None:
        losses.extend(curve)
    return model
