from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from densereward import ConfigError, ValidationError
from densereward.core.registry import build
from densereward.core.trajectories import Trajectories
from densereward.signals.tool_calls import (
    CallSyntaxError,
    ToolCallSignal,
    match_components,
    parse_calls,
)

SCHEMA = {"add": ("a", "b"), "sub": ("a", "b"), "mul": ("a", "k")}


def batch(responses: list[str], answers: list[str]) -> Trajectories:
    return Trajectories.from_episodes(
        {"reward": [[0.0, 0.0]] * len(responses)},
        {"group": [0] * len(responses)},
        text={"response": responses, "answer": answers},
    )


def last(out: Trajectories, name: str) -> list[float]:
    return out.step(name)[out.segments.last].tolist()


names = st.sampled_from(["add", "sub", "mul", "lookup", "f_2"])
keys = st.sampled_from(["a", "b", "k", "city", "n"])
values = st.one_of(
    st.integers(-1000, 1000), st.text("abc xyz'\"\\", max_size=6), st.booleans(), st.none()
)
calls = st.lists(
    st.tuples(names, st.dictionaries(keys, values, max_size=3)), min_size=1, max_size=3
)


@settings(max_examples=150, deadline=None)
@given(calls, st.sampled_from(["; ", "\n", ";"]), st.booleans())
def test_parse_calls_inverts_rendering(written, separator, spaces) -> None:
    comma = ", " if spaces else ","
    text = separator.join(
        f"{name}({comma.join(f'{k}={v!r}' for k, v in arguments.items())})"
        for name, arguments in written
    )
    assert parse_calls(text) == [(name, dict(arguments)) for name, arguments in written]


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=30))
def test_parse_calls_never_evaluates_and_only_raises_its_own_error(text) -> None:
    try:
        parsed = parse_calls(text)
    except CallSyntaxError:
        return
    assert all(isinstance(name, str) and isinstance(args, dict) for name, args in parsed)


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "add(a=1+2)",
        "add(a=x)",
        "add(**{'a': 1})",
        "add(a=1, a=2)",
        "obj.add(a=1)",
        "a = add(b=1)",
        "add(1, 2)",  # positional without a schema
        "",
    ],
)
def test_parse_calls_refuses_anything_but_literal_calls(text) -> None:
    with pytest.raises(CallSyntaxError):
        parse_calls(text)


def test_positional_arguments_are_named_by_the_schema() -> None:
    assert parse_calls("mul(7, k=2)", SCHEMA) == [("mul", {"a": 7, "k": 2})]
    with pytest.raises(CallSyntaxError):
        parse_calls("mul(7, 2, 3)", SCHEMA)


def test_toolrl_components_by_hand() -> None:
    gold = [("add", {"a": 3, "b": 4})]
    # right tool, parameter names {a, k} vs {a, b}: Jaccard 1/3, one value right
    assert match_components(gold, [("add", {"a": 3, "k": 4})]) == (1.0, 1 / 3, 1.0)
    # wrong tool: names share nothing, no pair of the same name is matched
    assert match_components(gold, [("mul", {"a": 3, "b": 4})])[0] == 0.0
    two = [("add", {"a": 1, "b": 2}), ("mul", {"a": 3, "k": 2})]
    assert match_components(two, list(reversed(two))) == (1.0, 2.0, 4.0)


def slow_best(gold, predicted):
    """The best one-to-one matching by brute force over every assignment, with None for none."""
    best = (0, 0.0, 0.0)
    slots = list(range(len(predicted))) + [None] * len(gold)
    for chosen in itertools.permutations(slots, len(gold)):
        pairs = [(g, p) for g, p in enumerate(chosen) if p is not None]
        same = [(g, p) for g, p in pairs if gold[g][0] == predicted[p][0]]
        names = values = 0.0
        for g, p in same:
            kg, kp = set(gold[g][1]), set(predicted[p][1])
            names += len(kg & kp) / len(kg | kp) if kg | kp else 1.0
            values += sum(1.0 for k in kg if k in kp and predicted[p][1][k] == gold[g][1][k])
        best = max(best, (len(same), names, values))
    return best[1], best[2]


@settings(max_examples=60, deadline=None)
@given(calls, calls)
def test_matching_is_the_best_assignment(gold, predicted) -> None:
    gold = [(n, dict(a)) for n, a in gold]
    predicted = [(n, dict(a)) for n, a in predicted]
    _, r_param, r_value = match_components(gold, predicted)
    assert (r_param, r_value) == pytest.approx(slow_best(gold, predicted))


def test_toolrl_reward_by_hand() -> None:
    signal = ToolCallSignal(schema=SCHEMA)
    responses = [
        "add(a=1,b=2)=3ки#add(a=3,b=4)",  # perfect: 1 + 3
        "#add(b=4, a=3)",  # keyword order does not matter
        "#add(a=3,b=5)",  # one value wrong: R_match 3/4 -> 1 + 6*3/4 - 3
        "#mul(a=3,k=4)",  # wrong tool: nothing matched -> 1 - 3
        "#add(a=3,",  # does not parse: 0 - 3
        "add(a=3,b=4)",  # no answer mark
        "#pow(a=3,b=4)",  # not in the schema: format fails
    ]
    out = signal(batch(responses, ["add(a=3,b=4)"] * 7), "tool")
    assert last(out, "tool") == pytest.approx([4.0, 4.0, 2.5, -2.0, -3.0, -3.0, -3.0])
    assert out.episode("tool_format").tolist() == [1, 1, 1, 1, 0, 0, 0]
    assert out.episode("tool_exact").tolist() == [1, 1, 0, 0, 0, 0, 0]
    assert out.step("tool")[0] == 0.0  # the reward sits on the last step only


def test_mix_gates_weighted_rules_by_format_and_exact_is_binary() -> None:
    mix = build(
        "signal",
        {
            "kind": "tool_calls",
            "reward": "mix",
            "weights": {"name": 0.5, "values": 0.5},
            "format_penalty": -2.0,
        },
    )
    responses = ["#add(a=3,b=4)", "#add(a=3,b=5)", "#mul(a=3,b=4)", "#add(a=3"]
    out = mix(batch(responses, ["add(a=3,b=4)"] * 4), "tool")
    assert last(out, "tool") == pytest.approx([1.0, 0.5 + 0.25, 0.0, -2.0])
    exact = ToolCallSignal(reward="exact")(batch(responses, ["add(a=3,b=4)"] * 4), "tool")
    assert last(exact, "tool") == [1.0, 0.0, 0.0, 0.0]


def test_bad_configuration_and_bad_references_are_refused() -> None:
    with pytest.raises(ConfigError, match="weights"):
        ToolCallSignal(weights={"speed": 1.0})
    with pytest.raises(ConfigError, match="schema"):
        build("signal", {"kind": "tool_calls", "schema": {"add": ["a b"]}})
    with pytest.raises(ValidationError, match="answer"):
        ToolCallSignal()(batch(["#add(a=1)"], ["not a call("]), "tool")


def test_scores_do_not_depend_on_the_batch_around_them() -> None:
    signal = ToolCallSignal(schema=SCHEMA)
    responses = ["#add(a=3,b=5)", "#sub(a=3,b=4)", "#add(a=3,b=4)"]
    together = last(signal(batch(responses, ["add(a=3,b=4)"] * 3), "t"), "t")
    alone = [last(signal(batch([r], ["add(a=3,b=4)"]), "t"), "t")[0] for r in responses]
    assert torch.allclose(torch.tensor(together), torch.tensor(alone))
