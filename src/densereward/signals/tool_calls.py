"""Tool-call rewards: format, tool name and parameter matching with partial credit (ToolRL), and a
rule-metric mix of weighted rules gated by format (MT-R1-Zero's mixed reward).

A response's calls are read from the text after the last answer mark (or the whole response):
one or more Python-syntax calls, ``add(a=3, b=4)`` or ``add(a=3, b=4); mul(a=7, k=2)``, parsed
with ``ast`` (never evaluated: argument values must be literals, ``ast.literal_eval``).
Positional arguments are named by the tool ``schema`` when it knows the tool. The reference
calls come from ``text[reference]`` (by default the task's answer).

ToolRL (Qian et al. 2025), for predicted calls ``P`` and reference calls ``G``:

    R_format  = 1 if every call parses (and names a tool of the schema when one is given), else 0
    r_name    = |N_G ∩ N_P| / |N_G ∪ N_P|                         (tool names, as sets)
    r_param   = Σ_{(g,p) matched} |keys_g ∩ keys_p| / |keys_g ∪ keys_p|
    r_value   = Σ_{(g,p) matched} Σ_{k ∈ keys_g} 𝟙[p[k] = g[k]]
    R_max     = 1 + |G| + Σ_g |keys_g|
    R_correct = 2·S·(r_name + r_param + r_value)/R_max − S          (in [−S, S], S = 3)
    r         = format_scale · R_format + R_correct                 (``reward: toolrl``)

Predicted and reference calls are matched one to one to maximise ``r_param + r_value`` among
calls of the same name first (exhaustively for up to 6 calls, greedily beyond). A response that
does not parse has ``R_format = 0`` and nothing matched (``R_correct = −S``).

``reward: mix`` is the rule-metric mix: ``r = 𝟙[format]·Σ_j λ_j·rule_j + (1 − 𝟙[format])·
format_penalty`` with rules ``name`` (r_name), ``parameters`` (r_param/|G|), ``values``
(r_value/Σ|keys_g|) and ``exact`` (the call sets are equal) weighted by ``weights``.
``reward: exact`` is the binary baseline ``𝟙[calls equal]``. Per trajectory the components are
written as ``{name}_format``, ``{name}_name``, ``{name}_parameters``, ``{name}_values`` and
``{name}_exact``; the reward lands on the last step of each trajectory.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from densereward.core.components import Signal
from densereward.core.errors import ConfigError, ValidationError
from densereward.core.parameters import NonNegative, Positive, Real
from densereward.core.registry import register
from densereward.core.trajectories import Trajectories

Call = tuple[str, dict[str, Any]]
"""A parsed tool call: its name and its arguments by parameter name."""

_EXHAUSTIVE = 6


class CallSyntaxError(ValueError):
    """The text is not a sequence of literal-argument calls."""


def parse_calls(text: str, schema: Mapping[str, Sequence[str]] | None = None) -> list[Call]:
    """Calls in ``text`` (separated by ``;`` or new lines), never evaluated.

    Raises ``CallSyntaxError`` for anything but calls of a plain name with literal arguments
    (a positional argument needs the tool in ``schema``; a repeated keyword is refused).

    >>> parse_calls("add(a=3, b=4); mul(7, k=2)", {"mul": ("a", "k")})
    [('add', {'a': 3, 'b': 4}), ('mul', {'a': 7, 'k': 2})]
    """
    try:
        tree = ast.parse(text.strip(), mode="exec")
    except (SyntaxError, ValueError) as error:
        raise CallSyntaxError(f"not Python: {error}") from None
    calls: list[Call] = []
    for statement in tree.body:
        if not isinstance(statement, ast.Expr) or not isinstance(statement.value, ast.Call):
            raise CallSyntaxError("every statement must be one call")
        node = statement.value
        if not isinstance(node.func, ast.Name):
            raise CallSyntaxError("a call must name its tool plainly")
        name = node.func.id
        arguments: dict[str, Any] = {}
        names = list((schema or {}).get(name, ()))
        if len(node.args) > len(names):
            raise CallSyntaxError(f"{name}: positional arguments need the tool's schema")
        for position, value in enumerate(node.args):
            arguments[names[position]] = _literal(value)
        for keyword in node.keywords:
            if keyword.arg is None:
                raise CallSyntaxError(f"{name}: ** arguments are not allowed")
            if keyword.arg in arguments:
                raise CallSyntaxError(f"{name}: parameter {keyword.arg!r} given twice")
            arguments[keyword.arg] = _literal(keyword.value)
        calls.append((name, arguments))
    if not calls:
        raise CallSyntaxError("no call")
    return calls


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise CallSyntaxError("argument values must be literals") from None


def _pair_score(gold: Call, predicted: Call) -> tuple[float, float]:
    """``(parameter-name Jaccard, matching values)`` of one matched pair."""
    keys_g, keys_p = set(gold[1]), set(predicted[1])
    union = keys_g | keys_p
    names = len(keys_g & keys_p) / len(union) if union else 1.0
    values = sum(1.0 for k in keys_g if k in predicted[1] and predicted[1][k] == gold[1][k])
    return names, values


def match_components(gold: Sequence[Call], predicted: Sequence[Call]) -> tuple[float, float, float]:
    """ToolRL's ``(r_name, r_param, r_value)`` of ``predicted`` against ``gold``."""
    names_g, names_p = {c[0] for c in gold}, {c[0] for c in predicted}
    union = names_g | names_p
    r_name = len(names_g & names_p) / len(union) if union else 1.0

    def value(pairs: Sequence[tuple[int, int]]) -> tuple[float, float, float]:
        same = [(g, p) for g, p in pairs if gold[g][0] == predicted[p][0]]
        scores = [_pair_score(gold[g], predicted[p]) for g, p in same]
        # lexicographic: pair calls of the same name first, then the most parameter credit
        return (float(len(same)), sum(s[0] for s in scores), sum(s[1] for s in scores))

    best: tuple[float, float, float] = (0.0, 0.0, 0.0)
    if gold and predicted:
        small, large = (gold, predicted) if len(gold) <= len(predicted) else (predicted, gold)
        swap = small is predicted
        if len(large) <= _EXHAUSTIVE:
            for chosen in itertools.permutations(range(len(large)), len(small)):
                pairs = [(b, a) if swap else (a, b) for a, b in enumerate(chosen)]
                best = max(best, value(pairs))
        else:
            free, pairs = set(range(len(large))), []
            for a in range(len(small)):
                options = [((b, a) if swap else (a, b)) for b in free]
                pick = max(options, key=lambda pair: value([*pairs, pair]))
                pairs.append(pick)
                free.discard(pick[1] if not swap else pick[0])
            best = value(pairs)
    return r_name, best[1], best[2]


def _canonical(calls: Sequence[Call]) -> list[str]:
    return sorted(repr((name, sorted(args.items(), key=lambda kv: kv[0]))) for name, args in calls)


def toolrl_reward(
    format_ok: torch.Tensor,
    r_name: torch.Tensor,
    r_param: torch.Tensor,
    r_value: torch.Tensor,
    r_max: torch.Tensor,
    format_scale: float = 1.0,
    correct_scale: float = 3.0,
) -> torch.Tensor:
    """``format_scale·R_format + 2S·(r_name + r_param + r_value)/R_max − S`` elementwise.

    >>> one = torch.ones(1)
    >>> toolrl_reward(one, one, one, 2 * one, 4 * one)  # a perfect single call, two parameters
    tensor([4.])
    """
    matched = (r_name + r_param + r_value) / r_max
    return format_scale * format_ok + 2 * correct_scale * matched - correct_scale


@register("signal", "tool_calls", paper="ToolRL (Qian et al. 2025); MT-R1-Zero rule-metric mix")
@dataclass(frozen=True)
class ToolCallSignal(Signal):
    """Tool-call reward on each response's last step (module docstring for the formulas):
    ``toolrl`` (format + name/parameter/value correctness), ``mix`` (weighted rules gated by
    format) or ``exact`` (binary). Reads ``text["response"]`` and ``text[reference]``."""

    reward: Literal["toolrl", "mix", "exact"] = "toolrl"
    """ToolRL's decomposition, the gated rule mix, or exact match"""
    schema: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """tool name -> its parameter names, in order (positional arguments; the format rule then
    also requires a known tool with only its own parameters); empty: any tool, keywords only"""
    reference: str = "answer"
    """text column with the reference calls"""
    extract: Literal["answer", "response"] = "answer"
    """read the calls after the last answer mark (``#``), or the whole response"""
    answer_mark: str = "#"
    """what precedes the answer"""
    format_scale: NonNegative = 1.0
    """ToolRL's format reward for well-formed calls"""
    correct_scale: Positive = 3.0
    """S: the correctness reward spans [−S, S]"""
    weights: dict[str, Real] = field(
        default_factory=lambda: {"name": 0.2, "parameters": 0.3, "values": 0.5}
    )
    """``mix``: weight of each rule (name, parameters, values, exact)"""
    format_penalty: Real = -1.0
    """``mix``: the reward of a response whose calls do not parse"""

    def __post_init__(self) -> None:
        unknown = [k for k in self.weights if k not in ("name", "parameters", "values", "exact")]
        if unknown:
            raise ConfigError(f"weights.{unknown[0]}", "rules: name, parameters, values, exact")
        for tool, parameters in self.schema.items():
            if not tool.isidentifier() or not all(p.isidentifier() for p in parameters):
                raise ConfigError(f"schema.{tool}", "tool and parameter names must be names")

    def components(self, response: str, reference: str) -> np.ndarray:
        """``[format, r_name, r_param, r_value, R_max, exact, |G|, Σ|keys_g|]`` of one pair."""
        try:
            gold = parse_calls(reference, self.schema)
        except CallSyntaxError as error:
            raise ValidationError(f"text.{self.reference}", f"{reference!r}: {error}") from None
        r_max = 1.0 + len(gold) + sum(len(c[1]) for c in gold)
        text = response
        if self.extract == "answer":
            _, mark, text = response.rpartition(self.answer_mark)
            if not mark:
                return np.array([0, 0, 0, 0, r_max, 0, len(gold), r_max - 1 - len(gold)], float)
        try:
            predicted = parse_calls(text, self.schema)
            ok = not self.schema or all(
                name in self.schema and set(args) <= set(self.schema[name])
                for name, args in predicted
            )
        except CallSyntaxError:
            predicted, ok = [], False
        r_name, r_param, r_value = match_components(gold, predicted) if ok else (0.0, 0.0, 0.0)
        exact = float(ok and _canonical(gold) == _canonical(predicted))
        keys = r_max - 1 - len(gold)
        return np.array([ok, r_name, r_param, r_value, r_max, exact, len(gold), keys], float)

    def __call__(self, batch: Trajectories, name: str) -> Trajectories:
        references = batch.text.get(self.reference)
        if references is None:
            raise ValidationError(f"text.{self.reference}", "no reference calls in the batch")
        table = torch.from_numpy(
            np.stack(
                [
                    self.components(r, g)
                    for r, g in zip(batch.text["response"], references, strict=True)
                ]
            ).reshape(len(batch), 8)
        )
        format_ok, r_name, r_param, r_value, r_max, exact, calls, keys = table.unbind(1)
        if self.reward == "toolrl":
            score = toolrl_reward(
                format_ok, r_name, r_param, r_value, r_max, self.format_scale, self.correct_scale
            )
        elif self.reward == "exact":
            score = exact
        else:
            rules = {
                "name": r_name,
                "parameters": r_param / calls.clamp(min=1),
                "values": torch.where(keys > 0, r_value / keys.clamp(min=1), r_name),
                "exact": exact,
            }
            mixed = sum(weight * rules[rule] for rule, weight in self.weights.items())
            score = torch.where(
                format_ok > 0, torch.as_tensor(mixed, dtype=torch.float64), self.format_penalty
            )
        device = batch.device
        steps = torch.zeros(batch.num_steps, dtype=torch.float64)
        steps.index_copy_(0, batch.segments.last.cpu(), score.to(torch.float64))
        return batch.with_steps(**{name: steps.to(device)}).with_episodes(
            **{
                f"{name}_format": format_ok.to(device),
                f"{name}_name": r_name.to(device),
                f"{name}_parameters": r_param.to(device),
                f"{name}_values": r_value.to(device),
                f"{name}_exact": exact.to(device),
            }
        )


__all__ = [
    "Call",
    "CallSyntaxError",
    "ToolCallSignal",
    "match_components",
    "parse_calls",
    "toolrl_reward",
]
