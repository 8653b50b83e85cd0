"""Reward hacking on the reasoning world: a lenient step judge (is each step a true statement?)
summed over steps pays a response for repeating correct steps; Clip, Delta and Clip-Delta remove
that incentive. Checked on real graded responses through the real pipeline and estimator."""

from __future__ import annotations

import numpy as np
import pytest

from densereward.models.language import encode_rows
from densereward.pipeline import Pipeline, Recipe
from densereward.worlds.reasoning.rollouts import graded_batch, policy_prompt
from densereward.worlds.reasoning.tasks import STEP_TAG, render_response
from tests.reasoning_fixtures import problems, tokenizer

SAFEGUARDS = {
    "clip": [{"kind": "clip", "source": "step_true", "eta": 0.5}],
    "delta": [{"kind": "delta", "source": "step_true"}],
    "clip_delta": [{"kind": "clip_delta", "source": "step_true", "eta": 0.5}],
}


def farming_group():
    """Per problem: the canonical response, the same with its first step repeated three times
    (still the right answer), and a wrong response."""
    items = [p for p in problems(12, 21) if len(p.steps) >= 2]
    responses, owners = [], []
    for index, problem in enumerate(items):
        steps = list(problem.steps)
        farmed = [steps[0]] * 3 + steps
        wrong = [*steps[:-1], steps[-1] + "1"]
        responses += [
            problem.response,
            render_response(farmed, problem.answer),
            render_response(wrong, problem.answer + "1"),
        ]
        owners += [index] * 3
    rows = encode_rows(tokenizer(), [policy_prompt(items[o]) for o in owners], responses)
    return graded_batch(rows, tokenizer(), items, np.array(owners))


def advantages_by_role(recipe: dict) -> np.ndarray:
    batch = farming_group()
    result = Pipeline(Recipe.from_dict(recipe))(batch)
    first = result.advantages[batch.offsets[:-1]].numpy()
    return first.reshape(-1, 3)  # columns: canonical, farmed, wrong


def test_the_judge_is_blind_to_repetition_and_the_verifier_is_not():
    batch = farming_group()
    outcome = batch.outcome.numpy().reshape(-1, 3)
    assert (outcome[:, 0] == 1).all() and (outcome[:, 1] == 1).all() and (outcome[:, 2] == 0).all()
    first_error = batch.episode("first_error").numpy().reshape(-1, 3)
    assert (first_error[:, 0] == -1).all() and (first_error[:, 1] == 1).all()
    judged = np.add.reduceat(batch.step("step_true").numpy(), batch.offsets[:-1].numpy()).reshape(
        -1, 3
    )
    assert (judged[:, 1] == judged[:, 0] + 3).all()
    assert (
        batch.text["response"][1].count(STEP_TAG) == batch.text["response"][0].count(STEP_TAG) + 3
    )


def test_raw_judge_reward_pays_for_repeated_steps():
    advantages = advantages_by_role({"estimator": {"kind": "grpo", "reward": "step_true"}})
    assert (advantages[:, 1] > advantages[:, 0]).all()


@pytest.mark.parametrize("safeguard", list(SAFEGUARDS))
def test_clip_delta_safeguards_remove_the_incentive(safeguard):
    advantages = advantages_by_role(
        {"transforms": SAFEGUARDS[safeguard], "estimator": {"kind": "grpo", "reward": "step_true"}}
    )
    assert (advantages[:, 1] <= advantages[:, 0] + 1e-9).all()
    assert (advantages[:, 0] > advantages[:, 2]).all()
