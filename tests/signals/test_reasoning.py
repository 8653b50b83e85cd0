"""Reasoning signals on real (small) HF models: implicit PRM, information gain, likelihood,
PRM and progress, each against a slow per-prefix computation or its defining identity."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from densereward.core.components import SignalContext
from densereward.core.errors import ConfigError
from densereward.models.language import token_logprobs, trajectories_to_rows
from densereward.models.prm import ProcessRewardModel
from densereward.signals.reasoning import (
    AnswerLikelihoodSignal,
    ImplicitPRMSignal,
    InformationGainSignal,
    ProgressSignal,
    implicit_token_rewards,
    step_token_sums,
)
from densereward.worlds.reasoning.rollouts import policy_prompt, rollout
from densereward.worlds.reasoning.tasks import STEP_TAG, TEXT_FORMAT
from tests.reasoning_fixtures import generator, model, problems, tokenizer


def rollout_batch(n_problems=4, n=3, seed=0):
    items = problems(n_problems, seed)
    batch, rows, _ = rollout(model(), tokenizer(), items, n, 24, generator=generator(seed))
    return batch, rows, items


def context(**models):
    return SignalContext(
        models={"policy": model(), "reference": model(), **models},
        tokenizer=tokenizer(),
        text_format=TEXT_FORMAT,
    )


def slow_answer_probability(lm, prompt: str, context_ids: list[int], answer: str) -> float:
    tok = tokenizer()
    head = [tok.bos_token_id, *tok(prompt, add_special_tokens=False)["input_ids"], *context_ids]
    tail = tok("#" + answer, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([head + tail])
    with torch.no_grad():
        logp = torch.log_softmax(lm(input_ids=ids).logits[0], -1)
    picked = [float(logp[len(head) + j - 1, t]) for j, t in enumerate(tail)]
    return float(np.exp(np.mean(picked)))


def test_implicit_rewards_sum_to_beta_times_the_sequence_log_ratio():
    batch, rows, _ = rollout_batch()
    spec = ImplicitPRMSignal(beta=0.05, learning_rate=1e-2, updates=2)
    # the trainer hands over its reference frozen (requires_grad off): φ must still learn
    frozen = copy.deepcopy(model())
    for parameter in frozen.parameters():
        parameter.requires_grad_(False)
    signal = spec.bind(context(reference=frozen))
    out = signal(batch, "implicit")
    # after its online update, φ differs from the reference, so the log-ratio is not zero
    with torch.no_grad():
        policy = token_logprobs(signal.phi, rows).double()
        reference = token_logprobs(signal.frozen, rows).double()
    per_trajectory = torch.zeros(len(batch), dtype=torch.float64).index_add_(
        0, batch.segments.ids, out.step("implicit")
    )
    expected = 0.05 * (policy - reference).sum(1)
    assert float(expected.abs().max()) > 1e-4
    assert per_trajectory.tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    tokens = implicit_token_rewards(policy, reference, 0.05)
    assert step_token_sums(tokens, batch).tolist() == pytest.approx(
        out.step("implicit").tolist(), abs=1e-5
    )


def test_implicit_prm_update_moves_rewards_toward_outcomes():
    batch, _, _ = rollout_batch(6, 4, seed=5)
    outcome = torch.tensor([float(i % 2) for i in range(len(batch))], dtype=torch.float64)
    batch = batch.with_episodes(outcome=outcome)
    spec = ImplicitPRMSignal(beta=0.5, learning_rate=5e-3, updates=20)
    signal = spec.bind(context())
    out = signal(batch, "implicit")
    totals = torch.zeros(len(batch), dtype=torch.float64).index_add_(
        0, batch.segments.ids, out.step("implicit")
    )
    assert float(totals[outcome == 1].mean()) > float(totals[outcome == 0].mean())


def test_information_gain_telescopes_and_matches_slow_probabilities():
    batch, rows, items = rollout_batch()
    spec = InformationGainSignal()
    signal = spec.bind(context())
    p0, p = signal.probabilities(batch)
    gains = signal(batch, "ig").step("ig")
    tag = tokenizer().convert_tokens_to_ids(STEP_TAG)
    spans = batch.token_spans.tolist()
    offsets = batch.offsets.tolist()
    for i in range(len(batch)):
        response = rows.responses[i][rows.response_mask[i]].tolist()
        prompt = policy_prompt(items[int(batch.episode("group")[i])])
        answer = batch.text["answer"][i]
        assert float(p0[i]) == pytest.approx(
            slow_answer_probability(model(), prompt, [], answer), rel=1e-4
        )
        tagged_total = 0.0
        last_tagged_p = float(p0[i])
        for k in range(offsets[i], offsets[i + 1]):
            end = spans[k][1]
            slow = slow_answer_probability(model(), prompt, response[:end], answer)
            assert float(p[k]) == pytest.approx(slow, rel=1e-4)
            if response[end - 1] == tag:
                tagged_total += float(gains[k])
                last_tagged_p = float(p[k])
            else:
                assert float(gains[k]) == 0.0
        # the gains of the tagged steps telescope to p_T − p_0
        assert tagged_total == pytest.approx(last_tagged_p - float(p0[i]), abs=1e-6)


def test_answer_likelihood_is_the_log_probability_after_the_reasoning():
    batch, rows, items = rollout_batch(3, 2, seed=1)
    spec = AnswerLikelihoodSignal()
    signal = spec.bind(context())
    out = signal(batch, "likelihood").step("likelihood")
    tag = tokenizer().convert_tokens_to_ids(STEP_TAG)
    last = batch.segments.last
    assert bool((out.index_fill(0, last, 0.0) == 0).all())
    for i in range(len(batch)):
        response = rows.responses[i][rows.response_mask[i]].tolist()
        cut = max([k + 1 for k, t in enumerate(response) if t == tag], default=0)
        prompt = policy_prompt(items[int(batch.episode("group")[i])])
        slow = slow_answer_probability(model(), prompt, response[:cut], batch.text["answer"][i])
        assert float(out[last[i]]) == pytest.approx(np.log(slow), abs=1e-4)


def test_progress_is_the_change_in_prover_value():
    batch, rows, _ = rollout_batch()
    value = ProcessRewardModel(model())
    torch.nn.init.normal_(value.head.weight, std=0.5)
    spec = ProgressSignal(model="prover_value")
    signal = spec.bind(context(prover_value=value))
    progress = signal(batch, "progress").step("progress")
    rows = trajectories_to_rows(batch)
    ends = batch.token_spans[:, 1]
    for i in range(len(batch)):
        positions = [rows.prompt_width - 1] + [
            rows.prompt_width + int(e) - 1 for e in ends[batch.offsets[i] : batch.offsets[i + 1]]
        ]
        values = value.score(rows, torch.tensor([[i, c] for c in positions])).double()
        assert progress[batch.offsets[i] : batch.offsets[i + 1]].tolist() == pytest.approx(
            torch.diff(values).tolist(), abs=1e-6
        )


def test_a_language_signal_without_a_text_format_is_a_config_error():
    """The step tag and answer mark are the world's; a context without them cannot bind."""
    bare = SignalContext(models={"policy": model()}, tokenizer=tokenizer())
    with pytest.raises(ConfigError, match="information_gain: needs a tokenizer and a text format"):
        InformationGainSignal().bind(bare)
    assert InformationGainSignal().needs().text and AnswerLikelihoodSignal().needs().text


def test_a_signal_without_its_model_is_a_config_error():
    with pytest.raises(ConfigError, match="needs model 'prm_mc'"):
        from densereward.signals.reasoning import PRMSignal

        PRMSignal(model="prm_mc").bind(context())
