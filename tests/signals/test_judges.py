"""The judge families against a judge that is right by construction (tests/rule_judge.py), served
for real on loopback: each family's scores equal what the rule says, placed on the right steps;
unparseable replies are counted and marked, never scored; prompt files that do not parse fail
with one line naming the file and line; a server that is down fails in bounded time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from densereward.core.components import SignalContext, TextFormat
from densereward.core.errors import ConfigError, ValidationError
from densereward.core.registry import build
from densereward.core.trajectories import Trajectories
from densereward.pipeline import Recipe
from densereward.signals.http import HTTPReplyError
from densereward.signals.judges import judged_batch, read_prompt, shipped_prompt
from tests.rule_judge import make_rule_judge, step_is_true
from tests.servers import running

pytest.importorskip("uvicorn")

TAG = "ки"
CONTEXT = SignalContext(seed=3, text_format=TextFormat(TAG, "#"))
GROUPS = {
    "(1+2)*2": ["1+2=3ки3*2=6ки#6", "1+2=4ки4*2=8ки#8", "1+2=3ки3*2=7ки#7", "1+2=5ки5*2=9ки#9"],
    "5-3+1": ["5-3=2ки2+1=3ки#3", "5-3=1ки1+1=3ки#3", "5-3=2ки#2", "5-3=9ки9+1=3ки#3"],
}


def make_batch() -> Trajectories:
    prompts, responses, groups = [], [], []
    for g, (prompt, answers) in enumerate(GROUPS.items()):
        prompts += [prompt] * len(answers)
        responses += answers
        groups += [g] * len(answers)
    lengths = [len(r.split(TAG)) for r in responses]
    return Trajectories.from_episodes(
        {"reward": [np.zeros(n) for n in lengths]},
        {"group": np.asarray(groups)},
        text={"prompt": prompts, "response": responses},
    )


BATCH = make_batch()
STEPS = [r.split(TAG) for r in BATCH.text["response"]]
TRUTH = [np.array([step_is_true(s) for s in steps], dtype=float) for steps in STEPS]
SHARE = np.array([t.mean() for t in TRUTH])


@pytest.fixture(scope="module")
def judge() -> Iterator[tuple[str, dict[str, int]]]:
    app, counts = make_rule_judge()
    with running(app) as base:
        yield f"{base}/v1", counts


@pytest.fixture(scope="module")
def garbage() -> Iterator[str]:
    with running(make_rule_judge("garbage")[0]) as base:
        yield f"{base}/v1"


@pytest.fixture(scope="module")
def biased() -> Iterator[str]:
    with running(make_rule_judge("biased_a")[0]) as base:
        yield f"{base}/v1"


def run(kind: str, url: str, **fields: Any) -> tuple[Trajectories, Any]:
    signal = build("signal", {"kind": kind, "base_url": url, "judge": "rule", **fields})
    bound = signal.bind(CONTEXT)
    try:
        return bound(BATCH, "judge"), bound
    finally:
        bound.close()


def per_trajectory(batch: Trajectories, name: str = "judge") -> list[np.ndarray]:
    return [t.numpy() for t in batch.to_episodes(name)]


def last_only(values: np.ndarray) -> list[np.ndarray]:
    return [np.r_[np.zeros(len(t) - 1), v] for t, v in zip(TRUTH, values, strict=True)]


def assert_steps(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-12)


# --------------------------------------------------------------------------- families
@pytest.mark.parametrize("samples", [1, 3])
def test_critique_scores_one_minus_the_votes_for_each_step(judge: Any, samples: int) -> None:
    out, _ = run("judge_critique", judge[0], samples=samples)
    assert_steps(per_trajectory(out), TRUTH)  # every critique names exactly the false steps
    assert out.step("judge_parsed").min() == 1.0


def test_step_judge_reads_p_yes_from_logprobs_and_verdicts_without(judge: Any) -> None:
    out, _ = run("judge_step", judge[0])
    assert_steps(per_trajectory(out), [np.where(t == 1, 0.9, 0.2) for t in TRUTH])
    out, _ = run("judge_step", judge[0], logprobs=False)
    assert_steps(per_trajectory(out), TRUTH)


def test_step_judge_asks_a_shared_prefix_once(judge: Any) -> None:
    url, counts = judge
    before = counts["chat"]
    run("judge_step", url, seed=123)
    # the first steps "1+2=3" (twice) and "5-3=2" (twice) share their prefixes: asked once each
    distinct = {
        (BATCH.text["prompt"][i], tuple(s[: t + 1]))
        for i, s in enumerate(STEPS)
        for t in range(len(s))
    }
    assert counts["chat"] - before == len(distinct) < BATCH.num_steps


def test_rubric_puts_the_score_last_and_penalises_unsupported_steps(judge: Any) -> None:
    out, _ = run("judge_rubric", judge[0], miracle_penalty=0.25)
    want = [-0.25 * (1 - t) + np.r_[np.zeros(len(t) - 1), t.mean()] for t in TRUTH]
    assert_steps(per_trajectory(out), want)


def test_checklist_scores_the_share_of_items_met(judge: Any) -> None:
    out, _ = run("judge_checklist", judge[0])  # the shipped list has 4 items; the rule meets 1, 3
    assert_steps(per_trajectory(out), last_only(np.full(len(TRUTH), 0.5)))


def test_checklist_items_per_trajectory_come_from_the_batch(judge: Any, tmp_path: Path) -> None:
    items = ["a\nb\nc"] * len(BATCH)
    batch = Trajectories(
        BATCH.offsets, BATCH.steps, BATCH.episodes, text={**BATCH.text, "checklist": items}
    )
    bound = build("signal", {"kind": "judge_checklist", "base_url": judge[0]}).bind(CONTEXT)
    out = bound(batch, "judge")
    bound.close()
    assert_steps(per_trajectory(out), last_only(np.full(len(TRUTH), 2 / 3)))


def test_pairwise_scores_each_response_against_the_groups_reference(judge: Any) -> None:
    out, _ = run("judge_pairwise", judge[0])
    last = np.array([v[-1] for v in per_trajectory(out)])
    groups = BATCH.episode("group").numpy()
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        # exactly one member is a reference from which every other score follows by the rule
        fits = [
            r
            for r in members
            if last[r] == 0.5
            and all(
                last[i] == (1.0 if SHARE[i] > SHARE[r] else 0.5 if SHARE[i] == SHARE[r] else 0.0)
                for i in members
                if i != r
            )
        ]
        assert len(fits) >= 1
    for v in per_trajectory(out):
        assert (v[:-1] == 0).all()


def test_both_orders_cancel_a_judges_position_bias(biased: str) -> None:
    out, _ = run("judge_pairwise", biased)
    assert np.allclose([v[-1] for v in per_trajectory(out)], 0.5)
    out, _ = run("judge_pairwise", biased, both_orders=False)
    last = np.array([v[-1] for v in per_trajectory(out)])
    assert sorted(last[:4]) == [0.5, 1.0, 1.0, 1.0]  # biased: every challenger "wins"


def test_tournament_crowns_the_best_and_ranks_by_round(judge: Any) -> None:
    url, counts = judge
    before = counts["chat"]
    out, _ = run("judge_tournament", url, seed=7)
    last = np.array([v[-1] for v in per_trajectory(out)])
    groups = BATCH.episode("group").numpy()
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        assert sorted(last[members]) == [0.0, 0.0, 0.5, 1.0]  # 4 players, 2 rounds
        champion = members[last[members] == 1.0][0]
        assert SHARE[champion] == SHARE[members].max()
    # single elimination: G - 1 matches per group, each asked in both orders
    assert counts["chat"] - before == 2 * sum(len(a) - 1 for a in GROUPS.values())


def test_principles_vote_over_samples_and_the_meta_judge_keeps_the_trusted(judge: Any) -> None:
    k = 4
    scores = [np.clip(10 * SHARE[:, None] + (np.arange(k) - (k - 1) / 2), 0, 10) / 10]
    out, _ = run("judge_principles", judge[0], samples=k)
    assert np.allclose([v[-1] for v in per_trajectory(out)], scores[0].mean(1))
    out, _ = run("judge_principles", judge[0], samples=k, meta_keep=2)
    top2 = np.sort(scores[0], 1)[:, -2:].mean(1)  # the rule's meta-judge trusts high scores
    assert np.allclose([v[-1] for v in per_trajectory(out)], top2)


# --------------------------------------------------------------------------- failures
@pytest.mark.parametrize(
    "kind",
    [
        "judge_critique",
        "judge_step",
        "judge_rubric",
        "judge_checklist",
        "judge_pairwise",
        "judge_principles",
    ],
)
def test_unparsed_replies_are_counted_and_marked_never_scored(garbage: str, kind: str) -> None:
    out, bound = run(kind, garbage, unparsed=0.25)
    parsed = out.step("judge_parsed").numpy()
    values = out.step("judge").numpy()
    assert bound.client.stats.parse_failures["judge"] > 0
    marked = parsed == 0
    assert marked.any() and np.all(values[marked] == 0.25)
    with pytest.raises(ValidationError, match="could not be parsed"):
        run(kind, garbage, fail_on_unparsed=True)


def test_a_rerun_is_answered_from_the_cache(judge: Any, tmp_path: Path) -> None:
    url, counts = judge
    cache = str(tmp_path / "judge.sqlite")
    first, _ = run("judge_critique", url, cache=cache, seed=99)
    sent = counts["chat"]
    again, bound = run("judge_critique", url, cache=cache, seed=99)
    assert counts["chat"] == sent and bound.client.stats.cache_hits == len(BATCH)
    assert torch.equal(first.step("judge"), again.step("judge"))


def test_a_server_that_is_down_fails_in_bounded_time() -> None:
    from densereward.adapters.server import bind

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    start = time.monotonic()
    with pytest.raises(HTTPReplyError) as error:
        run("judge_step", f"http://127.0.0.1:{port}/v1", retries=1, timeout=2.0)
    assert time.monotonic() - start < 20
    assert "\n" not in str(error.value) and str(port) in str(error.value)


def test_responses_that_do_not_split_into_the_batchs_steps_are_refused() -> None:
    batch = Trajectories.from_episodes(
        {"reward": [np.zeros(2)]}, text={"prompt": ["1+1"], "response": ["1+1=2ки2ки#2"]}
    )
    with pytest.raises(ValidationError, match="trajectory 0 has 2 steps"):
        judged_batch(batch, TAG)


# --------------------------------------------------------------------------- prompt files
FIELDS = {"system": frozenset({"problem"}), "user": frozenset({"problem", "steps"})}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "## user\nSolve {problem} in {stpes}\n",
            r"p\.md:3: section 'user' uses unknown placeholder \{stpes\}",
        ),
        ("intro\n## usr\n{problem}\n", r"p\.md:2: unknown section 'usr'"),
        ("## system\n{problem}\n", r"p\.md: has no '## user' section"),
        ("## user\n{problem\n", r"p\.md:3: section 'user': "),
        ("## user\na\n## user\nb\n", r"p\.md:4: section 'user' appears twice"),
    ],
)
def test_a_prompt_file_that_does_not_parse_names_the_file_and_line(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "p.md"
    path.write_text("# a judge prompt\n" + text if text.startswith("intro") is False else text)
    with pytest.raises(ConfigError, match=message) as error:
        read_prompt(path, FIELDS, ("user",))
    assert "\n" not in str(error.value)


def test_a_missing_prompt_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the prompt file"):
        build("signal", {"kind": "judge_step", "prompt": str(tmp_path / "none.md")}).bind(CONTEXT)


def test_every_shipped_prompt_parses_and_a_recipe_names_a_family(tmp_path: Path) -> None:
    from densereward.core.registry import lookup
    from densereward.signals.judges import JudgeSignal

    for kind in (
        "judge_critique",
        "judge_step",
        "judge_rubric",
        "judge_checklist",
        "judge_pairwise",
        "judge_tournament",
        "judge_principles",
    ):
        cls = lookup("signal", kind, "kind").cls
        assert issubclass(cls, JudgeSignal)
        read_prompt(shipped_prompt(kind), cls.sections, cls.required)
    recipe = Recipe.from_dict(
        {
            "signals": {"judge": {"kind": "judge_step", "base_url": "http://127.0.0.1:1/v1"}},
            "estimator": {"kind": "step_grpo", "process": "judge"},
        }
    )
    assert recipe.signals["judge"]["kind"] == "judge_step"
    with pytest.raises(ConfigError, match="samples"):
        Recipe.from_dict(
            {"signals": {"j": {"kind": "judge_step", "samples": 0}}, "estimator": {"kind": "grpo"}}
        )


def test_a_judge_runs_through_the_trainer_adapters_text_scorer(judge: Any) -> None:
    """The reward side of the verl, TRL and OpenRLHF adapters takes a judge recipe unchanged."""
    from densereward.adapters.text import TextScorer
    from densereward.worlds.reasoning.tokenizer import build_tokenizer

    recipe = Recipe.from_dict(
        {
            "signals": {"judge": {"kind": "judge_step", "base_url": judge[0]}},
            "estimator": {"kind": "step_grpo", "process": "judge"},
        }
    )
    scorer = TextScorer(recipe, build_tokenizer(), step_tag=TAG)
    prompts = [p for p, answers in GROUPS.items() for _ in answers]
    responses = [r for answers in GROUPS.values() for r in answers]
    rewards = scorer(prompts, responses)
    want = np.concatenate([np.where(t == 1, 0.9, 0.2) for t in TRUTH])
    np.testing.assert_allclose(rewards.rewards, want, atol=1e-6)
