"""GRPO for HF causal LMs: zero advantage where there is no baseline, the loss against a slow
per-token formula, and a policy that learns from outcome rewards."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pytest
import torch

from densereward.core.components import Signal
from densereward.core.layouts import broadcast_to_tokens
from densereward.core.registry import register
from densereward.pipeline import Pipeline, Recipe
from densereward.trainers.grpo import GRPOConfig, policy_loss, token_advantages, train_grpo
from densereward.worlds.reasoning.rollouts import rollout
from densereward.worlds.reasoning.task import ReasoningTask
from tests.reasoning_fixtures import generator, model, problems, tokenizer

OUTCOME_GRPO = Recipe.from_dict({"estimator": {"kind": "grpo", "reward": None}})


@pytest.mark.parametrize("case", ["size_one", "all_equal"])
def test_grpo_without_a_baseline_gives_zero_advantage_and_no_nan(case):
    items = problems(5, 1)
    batch, rows, _ = rollout(
        model(), tokenizer(), items, 1 if case == "size_one" else 4, 16, generator=generator()
    )
    if case == "all_equal":
        batch = batch.with_episodes(outcome=torch.ones(len(batch), dtype=torch.float64))
    result = Pipeline(OUTCOME_GRPO)(batch)
    advantages, mask = broadcast_to_tokens(
        result.trajectories, result.advantages.float(), rows.responses.shape[1]
    )
    assert bool(torch.isfinite(advantages).all()) and bool((advantages == 0).all())
    lm = model()
    logp = __import__("densereward.models.language", fromlist=["token_logprobs"]).token_logprobs(
        lm, rows
    )
    loss, _ = policy_loss(
        logp, logp.detach(), logp.detach(), advantages, mask & rows.response_mask, 0.2, 0.0
    )
    lm.zero_grad()
    loss.backward()
    assert all(p.grad is None or float(p.grad.abs().max()) == 0.0 for p in lm.parameters())


def test_responses_prof_drops_contribute_no_token_to_the_loss():
    batch, rows, _ = rollout(model(), tokenizer(), problems(4, 2), 6, 16, generator=generator())
    batch = batch.with_steps(prm=torch.rand(batch.num_steps, generator=generator(1)).double())
    recipe = Recipe.from_dict({"estimator": {"kind": "prof", "process": "prm", "keep": 3}})
    shaped = Pipeline(recipe)(batch)
    assert shaped.keep is not None
    assert shaped.trajectories.episode("keep").tolist() == shaped.keep.tolist()
    assert int(shaped.keep.sum()) == 4 * 3
    advantages, mask = token_advantages(shaped, rows)
    full, covered = broadcast_to_tokens(
        shaped.trajectories, shaped.advantages.float(), rows.responses.shape[1]
    )
    assert torch.equal(advantages, full)
    assert torch.equal(mask, covered & rows.response_mask & shaped.keep[:, None])
    assert bool(mask[shaped.keep].any(1).all()) and not bool(mask[~shaped.keep].any())


def test_policy_loss_matches_the_per_token_formula():
    torch.manual_seed(0)
    logp, old, ref = (torch.randn(3, 5) * 0.3 for _ in range(3))
    advantages = torch.randn(3, 5)
    mask = torch.rand(3, 5) > 0.3
    loss, stats = policy_loss(logp, old, ref, advantages, mask, 0.2, 0.1)
    total, count, kl_total = 0.0, 0, 0.0
    for b in range(3):
        for t in range(5):
            if not mask[b, t]:
                continue
            ratio = math.exp(logp[b, t] - old[b, t])
            a = float(advantages[b, t])
            surrogate = min(ratio * a, min(max(ratio, 0.8), 1.2) * a)
            d = float(ref[b, t] - logp[b, t])
            kl = math.exp(d) - d - 1
            total += -(surrogate - 0.1 * kl)
            kl_total += kl
            count += 1
    assert float(loss) == pytest.approx(total / count, rel=1e-5)
    assert stats["kl"] == pytest.approx(kl_total / count, rel=1e-5)


@register("signal", "test_short_response", paper="test only")
@dataclass(frozen=True)
class ShortResponse(Signal):
    """Reward 1 on the last step of responses of at most ``tokens`` tokens."""

    tokens: int = 4

    def __call__(self, batch, name):
        spans = batch.token_spans
        length = spans[batch.segments.last, 1].double()
        reward = torch.zeros(batch.num_steps, dtype=torch.float64)
        reward[batch.segments.last] = (length <= self.tokens).double()
        return batch.with_steps(**{name: reward})


def test_grpo_raises_the_reward_its_pipeline_gives():
    """A reward a random policy can reach (stop within 4 tokens), delivered through the pipeline:
    GRPO must make it more frequent."""
    tok = tokenizer()
    lm = model().__class__(model().config)
    lm.load_state_dict(model().state_dict())
    recipe = Recipe.from_dict(
        {
            "signals": {"short": {"kind": "test_short_response"}},
            "estimator": {"kind": "grpo", "reward": "short"},
        }
    )
    items = problems(8, 3)
    config = GRPOConfig(
        updates=30,
        prompts_per_update=4,
        group_size=8,
        max_new_tokens=12,
        learning_rate=3e-3,
        eval_every=100,
    )
    task = ReasoningTask(tok, lambda n, u: items[:n], items[:4])
    result = train_grpo(config, lm, task, recipe)
    rewards = [row["reward/short"] for row in result.metrics if "reward/short" in row]
    assert len(rewards) == 30
    assert sum(rewards[-4:]) / 4 > sum(rewards[:4]) / 4 + 0.2
    lengths = [row["response_tokens"] for row in result.metrics if "response_tokens" in row]
    assert lengths[-1] < lengths[0]


def test_each_evaluation_is_logged_at_the_samples_its_policy_trained_on():
    """Row u evaluates the policy before update u: the untrained policy at 0 samples, the final
    one at every sample drawn. Checked against evaluating copies of the policy at those points."""
    tok = tokenizer()
    lm = model().__class__(model().config)
    lm.load_state_dict(model().state_dict())
    items = problems(8, 3)
    config = GRPOConfig(
        updates=2, prompts_per_update=2, group_size=4, max_new_tokens=12, eval_every=1
    )
    task = ReasoningTask(tok, lambda n, u: items[u * n : (u + 1) * n], items[:4])
    start = task.evaluate(lm, config.max_new_tokens)
    result = train_grpo(config, lm, task, OUTCOME_GRPO)
    assert [row["samples"] for row in result.metrics] == [0.0, 8.0, 16.0]
    assert result.metrics[0]["eval_accuracy"] == start["eval_accuracy"]
    final = task.evaluate(result.policy, config.max_new_tokens)
    assert result.metrics[-1]["eval_greedy_accuracy"] == final["eval_greedy_accuracy"]


@dataclass(frozen=True)
class ShortIsRight(ReasoningTask):
    """The reasoning task graded so that a response of at most ``tokens`` tokens is right: a
    verdict a random policy reaches often. Keeps every batch it hands out."""

    tokens: int = 6
    drawn: list = dataclasses.field(default_factory=list)

    def rollout(self, policy, prompts, group_size, max_new_tokens, temperature, generator):
        batch, rows, cost = super().rollout(
            policy, prompts, group_size, max_new_tokens, temperature, generator
        )
        short = (batch.token_spans[batch.segments.last, 1] <= self.tokens).double()
        batch = batch.with_episodes(outcome=short, verdict=short)
        self.drawn.append(batch)
        return batch, rows, cost


def test_accuracy_and_gates_read_the_verdict_after_the_outcome_is_combined_away():
    """``combine`` moves the outcome reward into the steps and zeroes it. Accuracy is still the
    verdict's, and a gate placed after the combine still opens for right responses: with the
    outcome read as correctness, both were 0."""
    tok = tokenizer()
    lm = model().__class__(model().config)
    lm.load_state_dict(model().state_dict())
    items = problems(8, 3)
    task = ShortIsRight(tok, lambda n, u: items[:n], items[:2])
    recipe = Recipe.from_dict(
        {
            "signals": {"short": {"kind": "test_short_response", "tokens": 6}},
            "transforms": [
                {"kind": "combine", "weights": {"outcome": 1.0}, "target": "reward"},
                {"kind": "gate", "source": "short", "gate": "verdict", "target": "gated"},
            ],
            "estimator": {"kind": "grpo", "reward": "reward"},
        }
    )
    config = GRPOConfig(
        updates=4, prompts_per_update=4, group_size=6, max_new_tokens=12, eval_every=100
    )
    rows = train_grpo(config, lm, task, recipe).metrics[:-1]
    accuracy = [row["train_accuracy"] for row in rows]
    assert accuracy == [float(batch.verdict.mean()) for batch in task.drawn]
    assert max(accuracy) > 0
    assert [row["reward/gated"] for row in rows] == [row["reward/short"] for row in rows]
    assert [row["reward/reward"] for row in rows] == pytest.approx(accuracy)


@pytest.mark.parametrize("field", ["learning_rate", "temperature", "kl_coef", "clip_range"])
def test_grpo_refuses_a_rate_that_is_nan_or_negative(field):
    from densereward.core.errors import ConfigError

    for value in (float("nan"), -1.0):
        with pytest.raises(ConfigError, match=rf"^{field}: must be a finite"):
            GRPOConfig(**{field: value})
    GRPOConfig(kl_coef=0.0)  # no KL penalty is a choice, not an error
