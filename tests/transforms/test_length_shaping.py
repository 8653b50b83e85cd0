"""Length and efficiency shaping (LASER, LASER-D, VSRM, conciseness) against slow references,
and the invariant they share: a wrong answer never gains from being short."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from densereward import Trajectories
from densereward.core.errors import ConfigError, ValidationError
from densereward.core.registry import build
from densereward.pipeline import Pipeline, Recipe
from densereward.transforms.laser import response_lengths
from densereward.transforms.laser_d import adaptive_budgets
from tests.reference import transforms as reference
from tests.strategies import batches, episodes_of


@st.composite
def length_batches(draw, max_trajectories: int = 12):
    """``batches()`` plus what length shaping reads: token spans (with gaps), a verdict and a
    per-step answer probability."""
    batch = draw(batches(max_trajectories=max_trajectories))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n, total = len(batch), batch.num_steps
    widths = rng.integers(1, 8, size=total)
    gaps = rng.integers(0, 2, size=total) * rng.integers(0, 3, size=total)
    position = batch.segments.positions.numpy()
    ends, starts, cursor = np.zeros(total, int), np.zeros(total, int), 0
    for i in range(total):  # test data only: build spans step by step
        cursor = 0 if position[i] == 0 else cursor
        starts[i] = cursor + (gaps[i] if position[i] > 0 else 0)
        ends[i] = starts[i] + widths[i]
        cursor = ends[i]
    spans = torch.from_numpy(np.stack([starts, ends], 1))
    episodes = {**batch.episodes, "verdict": torch.from_numpy(rng.integers(0, 2, n).astype(float))}
    steps = {**batch.steps, "answer_probability": torch.from_numpy(rng.uniform(0, 1, total))}
    return Trajectories(batch.offsets, steps, episodes, spans)


def apply(spec: dict, batch: Trajectories) -> Trajectories:
    return build("transform", spec)(batch, 0)


def lengths_of(batch: Trajectories, unit: str) -> np.ndarray:
    if unit == "steps":
        return batch.lengths.numpy()
    return np.array(
        [int(spans[-1, 1]) for spans in torch.split(batch.token_spans, batch.lengths.tolist())]
    )


def bonus(out: Trajectories, batch: Trajectories) -> np.ndarray:
    return (out.outcome - batch.outcome).numpy()


UNITS = st.sampled_from(["tokens", "steps"])


@given(length_batches(), UNITS, st.floats(1.0, 30.0), st.floats(-1.0, 1.0))
def test_laser_matches_reference(batch: Trajectories, unit, budget, alpha) -> None:
    out = apply({"kind": "laser", "budget": budget, "alpha": alpha, "unit": unit}, batch)
    correct = batch.episode("verdict").numpy() >= 0.5
    expected = reference.laser(lengths_of(batch, unit), correct, budget, alpha)
    np.testing.assert_allclose(bonus(out, batch), expected, rtol=1e-12, atol=1e-15)


@given(length_batches(), UNITS)
def test_laser_on_a_step_target_adds_the_bonus_at_the_last_step(batch, unit) -> None:
    out = apply(
        {"kind": "laser", "budget": 12, "alpha": 0.5, "unit": unit, "target": "reward"}, batch
    )
    correct = batch.episode("verdict").numpy() >= 0.5
    expected = reference.laser(lengths_of(batch, unit), correct, 12.0, 0.5)
    added = out.step("reward") - batch.step("reward")
    np.testing.assert_allclose(added[batch.segments.last].numpy(), expected, atol=1e-12)
    assert float(added.abs().sum()) == pytest.approx(float(np.abs(expected).sum()))


CANDIDATES = st.sampled_from([None, (4.0, 8.0, 16.0, 32.0), (3.0, 5.0)])


@given(
    length_batches(),
    UNITS,
    st.sampled_from([(), (0.5,), (1 / 3, 2 / 3), (0.25, 0.5, 0.75)]),
    st.sampled_from([0.5, 1.0, 2.0]),
    CANDIDATES,
)
def test_laser_d_budgets_match_the_expected_correct_responses_rule(
    batch, unit, thresholds, expected_correct, candidates
) -> None:
    lengths = response_lengths(batch, unit)
    correct = batch.episode("verdict") >= 0.5
    budgets = adaptive_budgets(
        lengths,
        correct,
        batch.groups,
        torch.tensor(thresholds, dtype=torch.float64),
        expected_correct,
        None if candidates is None else torch.tensor(candidates, dtype=torch.float64),
    )
    expected = reference.laser_d_budgets(
        lengths.tolist(),
        correct.tolist(),
        batch.episode("group").tolist(),
        thresholds,
        expected_correct,
        candidates,
    )
    np.testing.assert_array_equal(budgets.numpy(), expected)


@given(length_batches(), UNITS, CANDIDATES, st.booleans())
def test_laser_d_matches_reference(batch, unit, candidates, explore) -> None:
    spec = {"kind": "laser_d", "alpha": 0.5, "unit": unit, "explore": explore}
    if candidates is not None:
        spec["budgets"] = list(candidates)
    out = apply(spec, batch)
    lengths, correct = lengths_of(batch, unit), batch.episode("verdict").numpy() >= 0.5
    budgets = reference.laser_d_budgets(
        lengths.tolist(),
        correct.tolist(),
        batch.episode("group").tolist(),
        (1 / 3, 2 / 3),
        1.0,
        candidates,
    )
    expected = reference.laser(lengths, correct, budgets, 0.5)
    if explore:
        expected = expected + np.where(~correct & (lengths > budgets), 0.5, 0.0)
    np.testing.assert_allclose(bonus(out, batch), expected, atol=1e-12)
    np.testing.assert_array_equal(
        out.episode("length_budget").numpy(), np.minimum(budgets, lengths.max())
    )


def test_laser_d_gives_easy_prompts_tighter_budgets() -> None:
    # prompt 0: all four right (easy); prompt 1: one of four right (hard)
    batch = Trajectories.from_episodes(
        {"r": [[0.0] * k for k in (2, 3, 4, 5, 6, 7, 8, 9)]},
        {
            "verdict": [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0],
            "group": [0] * 4 + [1] * 4,
            "outcome": [0.0] * 8,
        },
    )
    out = apply({"kind": "laser_d", "unit": "steps", "alpha": 1.0}, batch)
    assert out.episode("length_budget").tolist() == [2.0] * 4 + [8.0] * 4
    assert out.outcome.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]


@given(
    length_batches(),
    st.integers(1, 15),
    st.sampled_from([1.0, 0.9, 0.5]),
    st.sampled_from(["group", "zero"]),
)
def test_vsrm_matches_reference(batch, window, gamma, initial) -> None:
    out = apply(
        {"kind": "vsrm", "window": window, "gamma": gamma, "initial": initial, "target": "vsrm"},
        batch,
    )
    verdict = batch.episode("verdict").numpy()
    groups = batch.episode("group").numpy()
    if initial == "group":
        start = [verdict[groups == g].mean() for g in groups]
    else:
        start = [0.0] * len(batch)
    expected = reference.vsrm(episodes_of(batch, "answer_probability"), start, window, gamma)
    np.testing.assert_allclose(out.step("vsrm").numpy(), np.concatenate(expected), atol=1e-12)


@given(length_batches())
def test_vsrm_steps_that_do_not_move_the_answer_earn_nothing(batch) -> None:
    p = batch.step("answer_probability")
    repeated = torch.repeat_interleave(p[batch.segments.offsets[:-1]], batch.lengths)  # p flat
    flat = batch.with_steps(answer_probability=repeated)
    out = apply({"kind": "vsrm", "initial": "zero", "target": "vsrm"}, flat)
    first = batch.segments.positions == 0
    assert bool((out.step("vsrm")[~first] == 0).all())
    # with an unbounded window and no decay, every step is credited with the rest of the way
    full = apply({"kind": "vsrm", "initial": "zero", "window": 1000, "target": "vsrm"}, batch)
    final = p[batch.segments.last][batch.segments.ids]
    torch.testing.assert_close(full.step("vsrm"), final - torch.where(first, 0.0, torch.roll(p, 1)))


def test_vsrm_adds_to_an_existing_reward() -> None:
    batch = Trajectories.from_episodes(
        {"reward": [[1.0, 1.0]], "answer_probability": [[0.25, 1.0]]}, {"verdict": [1.0]}
    )
    out = apply({"kind": "vsrm", "initial": "zero", "scale": 2.0}, batch)
    assert out.step("reward").tolist() == [1.5, 2.5]


@given(length_batches(), UNITS, st.floats(0.0, 0.99))
def test_conciseness_matches_reference(batch, unit, alpha) -> None:
    out = apply({"kind": "conciseness", "alpha": alpha, "unit": unit}, batch)
    expected = reference.conciseness(
        lengths_of(batch, unit).astype(float),
        batch.episode("verdict").numpy() >= 0.5,
        batch.episode("group").numpy(),
        alpha,
        1e-6,
    )
    np.testing.assert_allclose(bonus(out, batch), expected, rtol=1e-12, atol=1e-15)


def _shorten(batch: Trajectories, which: torch.Tensor) -> Trajectories:
    """The batch with the responses in ``which`` one token per step, from token 0."""
    spans = batch.token_spans.clone()
    positions = batch.segments.positions
    tight = torch.stack([positions, positions + 1], 1)
    chosen = which[batch.segments.ids]
    spans[chosen] = tight[chosen]
    return Trajectories(batch.offsets, batch.steps, batch.episodes, spans)


SHAPERS = [
    {"kind": "laser", "budget": 10},
    {"kind": "laser_d"},
    {"kind": "laser_d", "explore": True},
    {"kind": "laser_d", "budgets": [5, 10, 20]},
    {"kind": "conciseness", "alpha": 0.5},
]


@settings(max_examples=60)
@given(length_batches(), st.sampled_from(SHAPERS))
def test_incorrect_responses_never_gain_from_shortness(batch, spec) -> None:
    wrong = batch.episode("verdict") < 0.5
    before = bonus(apply(spec, batch), batch)
    shorter = _shorten(batch, wrong)
    after = bonus(apply(spec, shorter), shorter)
    assert (after[wrong.numpy()] <= before[wrong.numpy()] + 1e-12).all()
    # and apart from LASER-DE's exploration bonus, a wrong answer earns nothing at any length
    if not spec.get("explore"):
        assert (after[wrong.numpy()] == 0).all() and (before[wrong.numpy()] == 0).all()


@settings(max_examples=60)
@given(length_batches(), st.sampled_from(SHAPERS[:4]))
def test_laser_correct_responses_never_lose_by_being_shorter(batch, spec) -> None:
    right = batch.episode("verdict") >= 0.5
    for i in torch.nonzero(right).flatten().tolist()[:3]:
        only = torch.zeros(len(batch), dtype=torch.bool)
        only[i] = True
        shorter = _shorten(batch, only)
        assert bonus(apply(spec, shorter), shorter)[i] >= bonus(apply(spec, batch), batch)[i]


@given(length_batches(), st.floats(0.0, 0.99))
def test_conciseness_keeps_every_correct_response_above_every_incorrect_one(batch, alpha) -> None:
    out = apply(
        {"kind": "conciseness", "alpha": alpha, "target": "verdict_reward"},
        batch.with_episodes(verdict_reward=batch.episode("verdict").clone()),
    )
    reward, right = out.episode("verdict_reward"), batch.episode("verdict") >= 0.5
    if bool(right.any()) and bool((~right).any()):
        assert float(reward[right].min()) > float(reward[~right].max())


def test_tokens_need_token_spans_and_bad_parameters_are_refused() -> None:
    batch = Trajectories.from_episodes({"r": [[0.0]]}, {"verdict": [1.0]})
    with pytest.raises(ValidationError, match="token_spans"):
        apply({"kind": "laser"}, batch)
    with pytest.raises(ConfigError, match="thresholds"):
        build("transform", {"kind": "laser_d", "thresholds": [0.7, 0.2]})
    with pytest.raises(ConfigError, match="budgets"):
        build("transform", {"kind": "laser_d", "budgets": [20, 10]})
    with pytest.raises(ConfigError):
        build("transform", {"kind": "vsrm", "window": 0})


def test_length_shaping_runs_in_a_float32_pipeline() -> None:
    batch = Trajectories.from_episodes(
        {
            "reward": [[0.0, 0.0], [0.0], [0.0, 0.0, 0.0]],
            "answer_probability": [[0.2, 0.9], [0.1], [0.3, 0.3, 0.0]],
        },
        {"verdict": [1.0, 1.0, 0.0], "outcome": [1.0, 1.0, 0.0], "group": [0, 0, 0]},
        token_spans=[[[0, 4], [4, 9]], [[0, 3]], [[0, 2], [3, 6], [6, 20]]],
    )
    recipe = Recipe.from_dict(
        {
            "transforms": [
                {"kind": "laser_d", "thresholds": [0.5]},
                {"kind": "conciseness"},
                {"kind": "vsrm"},
            ],
            "estimator": {"kind": "grpo"},
        }
    )
    result = Pipeline(recipe)(batch, dtype=torch.float32)
    assert bool(torch.isfinite(result.advantages).all())
    assert result.trajectories.episode("length_budget").tolist() == [3.0, 3.0, 3.0]
