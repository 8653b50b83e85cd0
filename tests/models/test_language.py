"""Sampling with a shared prompt cache, token log-probabilities, step spans, PRM scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from densereward.models.language import (
    Rows,
    encode_rows,
    position_ids,
    response_step_spans,
    sample,
    token_logprobs,
)
from densereward.models.prm import ProcessRewardModel, train_prm
from densereward.worlds.reasoning.rollouts import policy_prompt
from densereward.worlds.reasoning.tasks import STEP_TAG
from tests.reasoning_fixtures import generator, model, problems, tokenizer


def slow_logprobs(lm, prompt: str, response_ids: list[int]) -> list[float]:
    """One unpadded forward pass per response: no masks, no positions to get wrong."""
    tok = tokenizer()
    ids = torch.tensor(
        [[tok.bos_token_id, *tok(prompt, add_special_tokens=False)["input_ids"], *response_ids]]
    )
    with torch.no_grad():
        logits = lm(input_ids=ids).logits[0]
    p = ids.shape[1] - len(response_ids)
    logp = torch.log_softmax(logits[p - 1 : -1], -1)
    return logp[torch.arange(len(response_ids)), torch.tensor(response_ids)].tolist()


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_token_logprobs_match_unpadded_forward_passes(architecture):
    lm, tok = model(architecture), tokenizer()
    items = problems(5, 1)
    rows = encode_rows(tok, [policy_prompt(p) for p in items], [p.response for p in items])
    fast = token_logprobs(lm, rows)
    for i, p in enumerate(items):
        ids = rows.responses[i][rows.response_mask[i]].tolist()
        assert fast[i, : len(ids)].tolist() == pytest.approx(
            slow_logprobs(lm, policy_prompt(p), ids), abs=1e-4
        )
        assert bool((fast[i, len(ids) :] == 0).all())


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_shared_prompt_cache_samples_like_separate_prompts(architecture):
    """Greedy rows from one cached prefill repeated n times equal greedy decoding of each prompt
    alone; and the sampled tokens are the ones the full forward pass ranks first."""
    lm, tok = model(architecture), tokenizer()
    prompts = [policy_prompt(p) for p in problems(4, 2)]
    shared, cost = sample(lm, tok, prompts, n=3, max_new_tokens=12, temperature=0.0)
    assert cost.prefill_tokens == shared.prompt_width * len(prompts)
    for i, prompt in enumerate(prompts):
        alone, _ = sample(lm, tok, [prompt], n=1, max_new_tokens=12, temperature=0.0)
        mine = alone.responses[0][alone.response_mask[0]].tolist()
        for j in range(3):
            row = i * 3 + j
            assert shared.responses[row][shared.response_mask[row]].tolist() == mine
    with torch.no_grad():
        logits = lm(
            input_ids=shared.input_ids,
            attention_mask=shared.attention_mask,
            position_ids=position_ids(shared.attention_mask),
        ).logits[:, shared.prompt_width - 1 : -1]
    agree = (logits.argmax(-1) == shared.responses) | ~shared.response_mask
    assert bool(agree.all())


def test_sampled_rows_stop_at_the_first_eos():
    lm, tok = model(), tokenizer()
    rows, cost = sample(
        lm,
        tok,
        [policy_prompt(p) for p in problems(6)],
        n=4,
        max_new_tokens=20,
        generator=generator(1),
    )
    mask = rows.response_mask
    assert cost.generated_tokens == int(mask.sum())
    # the mask is a prefix of every row, and nothing follows an EOS inside it
    assert bool((mask[:, 1:] <= mask[:, :-1]).all())
    eos = (rows.responses == tok.eos_token_id) & mask
    assert bool((eos.sum(1) <= 1).all())
    last = mask.sum(1) - 1
    has_eos = eos.any(1)
    assert bool((rows.responses[torch.arange(len(last)), last][has_eos] == tok.eos_token_id).all())


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.sampled_from(["a", "T", "e"]), min_size=1, max_size=9), min_size=1, max_size=6
    )
)
def test_response_step_spans_match_a_loop(responses):
    """Steps end at tags; what follows the last tag is one more step."""
    symbol = {"a": 5, "T": 9, "e": 3}
    width = max(len(r) for r in responses)
    ids = torch.zeros((len(responses), width), dtype=torch.long)
    mask = torch.zeros((len(responses), width), dtype=torch.bool)
    for i, r in enumerate(responses):
        ids[i, : len(r)] = torch.tensor([symbol[c] for c in r])
        mask[i, : len(r)] = True
    rows = Rows(ids, mask.long(), mask, 0)
    lengths, spans = response_step_spans(rows, 9)
    expected = []
    for r in responses:
        start, mine = 0, []
        for k, c in enumerate(r):
            if c == "T" or k == len(r) - 1:
                mine.append([start, k + 1])
                start = k + 1
        expected.append(mine)
    assert lengths.tolist() == [len(e) for e in expected]
    assert spans.tolist() == [s for e in expected for s in e]


def test_prm_scores_at_tags_equal_scoring_each_prefix_separately():
    lm, tok = model(), tokenizer()
    prm = ProcessRewardModel(lm)
    torch.nn.init.normal_(prm.head.weight, std=0.5)
    items = problems(4, 3)
    rows = encode_rows(tok, [policy_prompt(p) for p in items], [p.response for p in items])
    lengths, spans = response_step_spans(rows, tok.convert_tokens_to_ids(STEP_TAG))
    row = np.repeat(np.arange(len(lengths)), lengths)
    positions = torch.as_tensor(np.stack([row, rows.prompt_width + spans[:, 1] - 1], 1))
    fast = prm.score(rows, positions)
    slow = []
    for i, p in enumerate(items):
        response_ids = rows.responses[i][rows.response_mask[i]].tolist()
        for _start, end in spans[row == i]:
            prefix = torch.tensor(
                [
                    [
                        tok.bos_token_id,
                        *tok(policy_prompt(p), add_special_tokens=False)["input_ids"],
                        *response_ids[:end],
                    ]
                ]
            )
            with torch.no_grad():
                logit = prm(prefix, torch.ones_like(prefix))[0, -1]
            slow.append(float(torch.sigmoid(logit)))
    assert fast.tolist() == pytest.approx(slow, abs=1e-5)


def test_prm_learns_exact_step_labels():
    """Trained on labels that mark a wrong step, the PRM separates good and bad steps."""
    tok = tokenizer()
    lm = model()
    items = problems(48, 4)
    responses, labels = [], []
    for k, p in enumerate(items):
        steps = list(p.steps)
        bad = k % 2 == 1
        if bad:
            steps[0] = steps[0] + "7"  # a wrong result at the first step
        responses.append("".join(s + STEP_TAG for s in steps) + "#" + p.answer)
        labels.append([0.0 if bad else 1.0] * (len(steps) + 1))
    rows = encode_rows(tok, [policy_prompt(p) for p in items], responses)
    lengths, spans = response_step_spans(rows, tok.convert_tokens_to_ids(STEP_TAG))
    row = np.repeat(np.arange(len(lengths)), lengths)
    positions = torch.as_tensor(np.stack([row, rows.prompt_width + spans[:, 1] - 1], 1))
    target = torch.tensor([v for r in labels for v in r])
    prm = ProcessRewardModel(lm)
    losses = train_prm(prm, rows, positions, target, epochs=30, batch_size=16, learning_rate=3e-3)
    assert losses[-1] < 0.5 * losses[0]
    scores = prm.score(rows, positions)
    assert float(scores[target == 1].mean()) > float(scores[target == 0].mean()) + 0.3
