"""densereward inside TRL 1.16's GRPOTrainer, checked against TRL's own advantages and against
densereward's pipeline on the same batch; and PRM training on TRL's stepwise format.

Everything is built locally: the reasoning world's tokenizer, one-layer GPT-2s from a config,
prompts from the world's tasks. No download, CPU only.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("trl")

from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from densereward.adapters.text import TextScorer
from densereward.adapters.trl import (
    AGGREGATES,
    DenseRewardGRPOTrainer,
    completion_text,
    reward_function,
    spread_over_tokens,
    stepwise_examples,
    train_stepwise_prm,
)
from densereward.core.components import SignalContext, TextFormat
from densereward.models.language import build_causal_lm
from densereward.models.prm import ProcessRewardModel
from densereward.pipeline import Pipeline, Recipe
from densereward.worlds.reasoning.rollouts import policy_prompt
from densereward.worlds.reasoning.tasks import STEP_TAG, TaskSpec, parse_response, sample_problems
from densereward.worlds.reasoning.tokenizer import build_tokenizer

GENERATIONS = 4
PROCESS = {
    "signals": {"prm": {"kind": "prm"}},
    "estimator": {"kind": "step_grpo", "process": "prm", "gamma": 0.0},
}
OUTCOME_ONLY = {"estimator": {"kind": "grpo", "reward": None, "eps": 1e-4, "unbiased_std": True}}


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return build_tokenizer()


@pytest.fixture(scope="module")
def prompts() -> Dataset:
    samples = sample_problems(TaskSpec(("arithmetic", "lists")), 16, 0)
    return Dataset.from_dict(
        {
            "prompt": [policy_prompt(s.problem) for s in samples],
            "answer": [s.problem.answer for s in samples],
        }
    )


def random_prm(tokenizer: Any, seed: int = 1) -> ProcessRewardModel:
    """A PRM from a config with a random head (a zero head scores every step 0.5)."""
    prm = ProcessRewardModel(build_causal_lm(tokenizer, layers=1, width=32, heads=2, seed=seed))
    torch.manual_seed(seed)
    torch.nn.init.normal_(prm.head.weight)
    return prm


def correct(prompts: list[str], responses: list[str], labels: list[Any]) -> list[float]:
    """Outcome function: the response's answer is the label."""
    return [float(parse_response(r)[1] == y) for r, y in zip(responses, labels, strict=True)]


def shape_reward(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
    """A TRL reward that varies on a random policy's output: length and step tags."""
    return [len(c) / 10 + c.count(STEP_TAG) for c in completions]


def tag_reward(prompts: list[str], completions: list[str], **columns: Any) -> list[float | None]:
    return [None if i % 7 == 3 else float(STEP_TAG in c) for i, c in enumerate(completions)]


def grpo_args(tmp_path: Path, **overrides: Any) -> GRPOConfig:
    settings: dict[str, Any] = {
        "use_vllm": False,
        "bf16": False,
        "gradient_checkpointing": False,
        "num_generations": GENERATIONS,
        "per_device_train_batch_size": 8,
        "max_completion_length": 24,
        "report_to": "none",
        "output_dir": str(tmp_path),
        "max_steps": 2,
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": 0,
        "dataloader_pin_memory": False,
    }
    return GRPOConfig(**{**settings, **overrides})


def make_trainer(
    tokenizer: Any,
    prompts: Dataset,
    tmp_path: Path,
    scorer: TextScorer,
    recipe: dict[str, Any] | None = None,
    reward_funcs: list[Any] | None = None,
    **overrides: Any,
) -> DenseRewardGRPOTrainer:
    return DenseRewardGRPOTrainer(
        model=build_causal_lm(tokenizer, layers=1, width=32, heads=2),
        reward_funcs=reward_funcs or [shape_reward],
        args=grpo_args(tmp_path, **overrides),
        train_dataset=prompts,
        processing_class=tokenizer,
        scorer=scorer,
        recipe=Recipe.from_dict(recipe) if recipe is not None else None,
        label_column="answer",
    )


def generation_batch(prompts: Dataset, count: int = 2) -> list[dict[str, Any]]:
    """What TRL's RepeatSampler hands the trainer: each prompt ``num_generations`` times."""
    return [dict(prompts[i]) for i in range(count) for _ in range(GENERATIONS)]


def slow_step_token_ends(tokenizer: Any, ids: list[int], char_ends: list[int]) -> list[int]:
    """Exclusive end token of each step, token by token: a step ends at the first token whose
    text reaches its last character; the last step ends at the last token."""
    position, reached = 0, []
    for token in ids:
        position += len(tokenizer.decode([token], skip_special_tokens=True))
        reached.append(position)
    out = []
    for end in char_ends[:-1]:
        out.append(next(t for t, r in enumerate(reached) if r >= end) + 1)
    return [*out, len(ids)]


# ----------------------------------------------------------------------------- reward functions
@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_reward_function_aggregates_the_scorers_step_rewards(
    tokenizer: Any, aggregate: str
) -> None:
    scorer = TextScorer(
        Recipe.from_dict(PROCESS),
        tokenizer,
        step_tag=STEP_TAG,
        models={"prm": random_prm(tokenizer)},
        outcome=correct,
    )
    prompts = ["1+2=?", "1+2=?", "(1+2)*2=?"]
    responses = ["1+2=3ки#3", "1+2=4ки4ки#4", "1+2=3ки3*2=6ки#6"]
    labels = ["3", "3", "6"]
    f = reward_function(scorer, aggregate, label_column="answer")
    assert f.__name__ == f"densereward_{aggregate}"
    got = f(
        prompts=prompts,
        completions=responses,
        completion_ids=None,
        trainer_state=None,
        log_extra=None,
        log_metric=None,
        answer=labels,
    )
    scored = scorer(prompts, responses, labels, [0, 0, 1])
    steps = scored.per_response()
    outcome = scored.outcome.tolist()
    reference = {
        "total": [o + sum(s) for o, s in zip(outcome, steps, strict=True)],
        "sum": [sum(s) for s in steps],
        "mean": [sum(s) / len(s) for s in steps],
        "min": [min(s) for s in steps],
        "last": [s[-1] for s in steps],
        "outcome": outcome,
    }[aggregate]
    assert outcome == [1.0, 0.0, 1.0]
    assert [len(s) for s in steps] == [2, 3, 3]
    np.testing.assert_allclose(got, reference, rtol=1e-12)


def test_reward_function_reads_conversational_completions(tokenizer: Any) -> None:
    scorer = TextScorer(
        Recipe.from_dict(OUTCOME_ONLY), tokenizer, step_tag=STEP_TAG, outcome=correct
    )
    f = reward_function(scorer, "outcome", label_column="answer", name="exact")
    assert f.__name__ == "exact"
    messages = [
        [{"role": "assistant", "content": "1+2=3ки#3"}],
        [{"role": "assistant", "content": "#5"}],
    ]
    prompts = [[{"role": "user", "content": "1+2=?"}]] * 2
    assert completion_text(messages[0]) == "1+2=3ки#3"
    assert f(prompts=prompts, completions=messages, answer=["3", "3"]) == [1.0, 0.0]


@given(st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=4), min_size=1, max_size=5))
def test_spread_over_tokens_matches_a_loop_over_tokens(widths: list[list[int]]) -> None:
    """Rows of steps of the given token widths (0: a step that covers no token), padded."""
    width = max(sum(row) for row in widths) + 1
    ends = [int(e) for row in widths for e in np.cumsum(row)]
    offsets = np.r_[0, np.cumsum([len(row) for row in widths])]
    values = torch.arange(1.0, len(ends) + 1.0)
    mask = torch.tensor([[float(t < sum(row)) for t in range(width)] for row in widths])
    expected = torch.zeros(len(widths), width)
    for i, row in enumerate(widths):
        start = 0
        for k in range(len(row)):
            for t in range(start, ends[offsets[i] + k]):
                expected[i, t] = values[offsets[i] + k]
            start = ends[offsets[i] + k]
    got = spread_over_tokens(values, torch.as_tensor(offsets), torch.tensor(ends), mask)
    assert torch.equal(got, expected * mask)


# ----------------------------------------------------------------------------- the trainer
def test_outcome_only_recipe_gives_trls_own_advantages(
    tokenizer: Any, prompts: Dataset, tmp_path: Path
) -> None:
    scorer = TextScorer(Recipe.from_dict(OUTCOME_ONLY), tokenizer, step_tag=STEP_TAG)
    trainer = make_trainer(
        tokenizer, prompts, tmp_path, scorer, reward_funcs=[shape_reward, tag_reward]
    )
    trainer.model.train()
    batch = generation_batch(prompts)
    torch.manual_seed(0)
    theirs = GRPOTrainer._generate_and_score_completions(trainer, [dict(x) for x in batch])
    torch.manual_seed(0)
    ours = trainer._generate_and_score_completions([dict(x) for x in batch])
    assert torch.equal(theirs["completion_ids"], ours["completion_ids"])
    mask = ours["completion_mask"]
    assert theirs["advantages"].shape == (8,)
    assert ours["advantages"].shape == ours["completion_ids"].shape
    assert float(theirs["advantages"].abs().max()) > 0.1  # the rewards do vary within groups
    expected = theirs["advantages"][:, None] * mask
    torch.testing.assert_close(ours["advantages"], expected.float(), rtol=1e-5, atol=1e-5)
    assert trainer.last_batch is not None
    assert trainer.last_batch.episode("group").tolist() == [0] * 4 + [1] * 4


def test_process_recipe_advantages_equal_the_pipeline_spread_over_policy_tokens(
    tokenizer: Any, prompts: Dataset, tmp_path: Path
) -> None:
    prm = random_prm(tokenizer)
    scorer = TextScorer(
        Recipe.from_dict(PROCESS),
        tokenizer,
        step_tag=STEP_TAG,
        models={"prm": prm},
        outcome=correct,
    )
    trainer = make_trainer(tokenizer, prompts, tmp_path, scorer)
    trainer.model.train()
    torch.manual_seed(3)
    out = trainer._generate_and_score_completions(generation_batch(prompts))
    ids, mask = out["completion_ids"], out["completion_mask"]

    # the reference: the completions' text, densereward's pipeline, a token-by-token spread
    rows = [row[: sum(m)] for row, m in zip(ids.tolist(), mask.tolist(), strict=True)]
    texts = ["".join(tokenizer.decode([t], skip_special_tokens=True) for t in row) for row in rows]
    pipeline = Pipeline(
        Recipe.from_dict(PROCESS),
        SignalContext(
            models={"prm": prm}, tokenizer=tokenizer, text_format=TextFormat(STEP_TAG, "#")
        ),
    )
    source = [str(x["prompt"]) for x in generation_batch(prompts)]
    batch = scorer.batch(
        source, texts, [x["answer"] for x in generation_batch(prompts)], [0] * 4 + [1] * 4
    )
    result = pipeline(batch)
    advantages = result.advantages.tolist()
    char_ends = batch.step("char_end").tolist()
    offsets = batch.offsets.tolist()
    expected = torch.zeros(ids.shape)
    for i, row in enumerate(rows):
        ends = slow_step_token_ends(tokenizer, row, char_ends[offsets[i] : offsets[i + 1]])
        start = 0
        for k, end in enumerate(ends):
            for t in range(start, end):
                expected[i, t] = advantages[offsets[i] + k] * float(mask[i, t])
            start = max(start, end)
    assert int(batch.lengths.max()) > 1  # some completion has more than one step
    assert len(set(np.round(result.advantages.numpy(), 6))) > 2
    torch.testing.assert_close(out["advantages"], expected, rtol=1e-5, atol=1e-6)
    assert trainer.last_batch is not None
    torch.testing.assert_close(
        trainer.last_batch.step("advantage").double(),
        result.advantages.double(),
        rtol=1e-6,
        atol=1e-7,
    )


def test_trainer_trains_a_small_policy_on_process_rewards(
    tokenizer: Any, prompts: Dataset, tmp_path: Path
) -> None:
    scorer = TextScorer(
        Recipe.from_dict(PROCESS),
        tokenizer,
        step_tag=STEP_TAG,
        models={"prm": random_prm(tokenizer)},
    )
    trainer = make_trainer(tokenizer, prompts, tmp_path, scorer, learning_rate=1e-3)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    after = list(trainer.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    assert any("densereward/prm/mean" in entry for entry in trainer.state.log_history)


# ----------------------------------------------------------------------------- stepwise PRMs
def stepwise_rows(count: int, seed: int) -> list[dict[str, Any]]:
    """Steps ``x=d``; a step is right when its digit is below 5 (a function of its text)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        digits = rng.integers(0, 10, size=int(rng.integers(1, 4)))
        rows.append(
            {
                "prompt": f"{int(rng.integers(0, 10))}+1=?",
                "completions": [f"x={d}" for d in digits],
                "labels": [bool(d < 5) for d in digits],
            }
        )
    return rows


def test_stepwise_prm_learns_the_labels_and_round_trips(tokenizer: Any, tmp_path: Path) -> None:
    train = Dataset.from_list(stepwise_rows(300, 0))
    held_out = stepwise_rows(60, 1)
    backbone = build_causal_lm(tokenizer, layers=1, width=32, heads=2)
    examples = stepwise_examples(held_out, tokenizer, STEP_TAG)
    # every label sits on a step tag
    tags = examples.rows.input_ids[examples.positions[:, 0], examples.positions[:, 1]]
    assert set(tags.tolist()) == {tokenizer.convert_tokens_to_ids(STEP_TAG)}

    def loss(model: ProcessRewardModel) -> float:
        with torch.no_grad():
            logits = model.step_logits(examples.rows, examples.positions)
        return float(torch.nn.functional.binary_cross_entropy_with_logits(logits, examples.labels))

    curve: list[float] = []
    prm = train_stepwise_prm(
        train,
        backbone,
        tokenizer,
        STEP_TAG,
        epochs=12,
        batch_size=32,
        learning_rate=3e-3,
        losses=curve,
    )
    assert loss(prm) < 0.8 * loss(ProcessRewardModel(backbone))
    assert np.mean(curve[-5:]) < np.mean(curve[:5])

    # scored as the ``prm`` signal of a TextScorer with the separator as its step tag
    scorer = TextScorer(
        Recipe.from_dict(PROCESS), tokenizer, step_tag=STEP_TAG, models={"prm": prm}
    )
    responses = ["".join(c + STEP_TAG for c in row["completions"]) for row in held_out]
    scored = scorer([row["prompt"] for row in held_out], responses)
    steps = [s[:-1] for s in scored.per_response()]  # the untagged (empty) tail has no label
    predicted = np.array([v >= 0.5 for s in steps for v in s])
    truth = np.array([y for row in held_out for y in row["labels"]])
    accuracy = (predicted == truth).mean()
    assert accuracy > 0.8

    prm.save_pretrained(tmp_path / "prm")
    loaded = ProcessRewardModel.from_pretrained(tmp_path / "prm")
    torch.testing.assert_close(
        loaded.score(examples.rows, examples.positions),
        prm.score(examples.rows, examples.positions),
    )


def test_the_readme_trl_lines_train(
    tokenizer: Any, prompts: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's TRL block, run as written in a folder holding the files it names, with the
    objects it assumes: it trains a PRM, builds the trainer, and the trainer takes two steps on
    the PRM's step rewards."""
    from pathlib import Path as _Path

    text = (_Path(__file__).parents[2] / "README.md").read_text()
    section = text[text.index("### TRL") :]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    tokenizer.save_pretrained("tokenizer")
    (tmp_path / "prm.yaml").write_text(
        "signals: {prm: {kind: prm, model: prm}}\nestimator: {kind: step_grpo, process: prm}\n"
    )
    (tmp_path / "grader.py").write_text(f"from {__name__} import correct as grade\n")
    rows = stepwise_rows(32, seed=0)
    namespace: dict[str, Any] = {
        "stepwise_dataset": Dataset.from_list(rows),
        "model": build_causal_lm(tokenizer, layers=1, width=32, heads=2),
        "tokenizer": tokenizer,
        "grpo_config": grpo_args(tmp_path / "out", learning_rate=1e-3),
        "prompts": prompts,
    }
    exec(compile(block, "README.md", "exec"), namespace)
    trainer = namespace["trainer"]
    assert trainer.scorer.recipe.signals == {"prm": {"kind": "prm", "model": "prm"}}
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    assert any(
        not torch.equal(a, b) for a, b in zip(trainer.model.parameters(), before, strict=True)
    )
    assert trainer.last_batch is not None and "prm" in trainer.last_batch.steps
