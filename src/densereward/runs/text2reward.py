"""The Text2Reward loop: a language model writes reward code, PPO trains on it, the training
statistics go back to the model, and it writes better code.

Text2Reward (Xie et al. 2024) and Eureka (Ma et al. 2024): given the environment's abstraction (what
a reward function receives) and the task, a model samples ``K`` candidate programs
``R_k(s, a, s')``; each is trained with RL, and its *reward reflection* (success along training,
episode statistics, what its reward paid) is fed back with the best program so far for the next
round. Here the model is any OpenAI-compatible server (:class:`JudgeClient`); each round asks one
chat request for ``candidates`` choices. A candidate is used only if it passes, in order:

1. ``syntax``/``signature``: it parses and defines ``compute_reward(obs, act, next_obs,
   terminated, truncated)`` (read as a syntax tree, nothing runs);
2. ``trial``: run in the sandbox on transitions of a random policy, it returns one finite reward
   per transition.

Rejected candidates are fed back with the reason, and so is one that passes the trial but fails
on a training batch (its run stops there, the loop goes on). Accepted ones train PPO on the run recipe's
world, trainer and seed with ``env_weight · r_env + R_k`` (the ``reward_code`` signal, in the
sandbox on every batch, and ``combine``), beside the recipe's first method as the baseline. The
loop keeps the best candidate by final success, then steps to the success threshold.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from densereward.core.errors import ConfigError, ValidationError
from densereward.evaluation.curves import first_reaching, trailing_mean
from densereward.io.atomic import atomic_path
from densereward.pipeline import Recipe
from densereward.runs.executor import Job, MethodRun, run_job
from densereward.runs.recipe import RunRecipe
from densereward.signals.judge_client import ChatRequest, JudgeClient
from densereward.signals.reward_code import (
    RewardCodeError,
    check_reward_source,
    reward_sandbox,
    run_reward_code,
)

SYSTEM = """\
You write dense reward functions for reinforcement learning, in Python with NumPy only.
Reply with one fenced ```python block defining

    def compute_reward(obs, act, next_obs, terminated, truncated) -> np.ndarray

over a batch of n transitions (NumPy arrays, described below), returning n finite floats: the
reward for each transition. It is added to the environment's own sparse reward. Vectorise over
the batch; do not read files, the network or the clock. Rewards that pay for progress towards the
goal (a potential difference gamma * phi(next_obs) - phi(obs)) keep the optimal policy; rewards
paid for a state, again and again, invite the agent to stay in it."""

SMOOTHING = 5
FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Text2RewardConfig:
    """How the loop asks, checks and trains."""

    rounds: int = 3
    candidates: int = 4
    """choices asked per round (one request with ``n = candidates``)"""
    env_weight: float = 1.0
    """the environment's own reward beside a candidate's, ``env_weight · r_env + R_k``"""
    temperature: float = 1.0
    max_tokens: int = 1024
    trial_transitions: int = 256
    timeout: float = 30.0
    """sandbox seconds per reward call (trial and every training batch)"""
    memory_mb: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rounds", "candidates", "max_tokens", "trial_transitions", "memory_mb"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')}", "must be at least 1")
        for name in ("env_weight", "temperature"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(
                    f"--{name.replace('_', '-')}", f"must be finite and >= 0, got {value}"
                )
        if not math.isfinite(self.timeout) or self.timeout <= 0:
            raise ConfigError("--timeout", f"must be positive and finite, got {self.timeout}")


@dataclass(frozen=True)
class Candidate:
    """One reply of the model: its code, where it stopped, and how training on it went."""

    round: int
    index: int
    code: str | None
    stage: str
    """``"syntax"``, ``"signature"``, ``"trial"`` (rejected there), ``"training"`` (passed the
    trial, then failed on a training batch: stopped there) or ``"trained"``"""
    problem: str | None = None
    statistics: dict[str, Any] | None = None

    def record(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "candidate": self.index,
            "stage": self.stage,
            "problem": self.problem,
            **(self.statistics or {}),
        }


def extract_code(reply: str) -> str:
    """The program in a reply: the fenced block that defines ``compute_reward`` (else the first
    fenced block, else the whole reply)."""
    blocks = FENCE.findall(reply)
    for block in blocks:
        if "def compute_reward" in block:
            return str(block)
    return str(blocks[0]) if blocks else reply


def training_statistics(run: MethodRun, threshold: float, env_weight: float) -> dict[str, Any]:
    """A trained run as the loop feeds it back: smoothed success at each quarter of training and
    at the end (the mean of the last 10 % of updates), the steps at which it first reaches
    ``threshold`` (``inf``: never), true return, episode length, the candidate's reward per step
    (the shaped reward less ``env_weight`` times the environment's), held-out success."""
    rows = run.rows
    steps = np.array([r["env_steps"] for r in rows], dtype=float)
    success = trailing_mean(np.array([r["success_rate"] for r in rows], dtype=float), SMOOTHING)
    tail = max(1, len(rows) // 10)

    def mean(values: np.ndarray) -> float:
        return float(np.nanmean(values)) if np.any(~np.isnan(values)) else float("nan")

    quarters = [mean(success[: max(1, round(len(rows) * q / 4))][-1:]) for q in (1, 2, 3, 4)]
    shaped = np.array([r["shaped_reward_per_step"] for r in rows], dtype=float)
    true = np.array([r["true_reward_per_step"] for r in rows], dtype=float)
    return {
        "final_success": mean(success[-tail:]),
        "success_by_quarter": quarters,
        "steps_to_threshold": first_reaching(steps, success, threshold),
        "final_return": mean(np.array([r["true_return"] for r in rows[-tail:]], dtype=float)),
        "episode_length": mean(np.array([r["episode_length"] for r in rows[-tail:]], dtype=float)),
        "code_reward_per_step": float(np.mean(shaped - env_weight * true)),
        "env_reward_per_step": float(np.mean(true)),
        "held_out_success": float(run.evaluation.get("eval_success_rate", float("nan"))),
        "seconds": run.seconds,
    }


def describe_statistics(stats: dict[str, Any], threshold: float) -> str:
    steps = stats["steps_to_threshold"]
    reached = f"{steps:,.0f} steps" if math.isfinite(steps) else "never"
    quarters = ", ".join(f"{q:.2f}" for q in stats["success_by_quarter"])
    return (
        f"final success {stats['final_success']:.2f} (by quarter of training: {quarters}); "
        f"reached {threshold:.0%} success: {reached}; true return {stats['final_return']:.3f}; "
        f"episode length {stats['episode_length']:.1f}; its reward per step "
        f"{stats.get('code_reward_per_step', 0.0):+.4f} (the environment's "
        f"{stats['env_reward_per_step']:.4f}); held-out success {stats['held_out_success']:.2f}"
    )


def _rank(candidate: Candidate) -> tuple[float, float]:
    stats = candidate.statistics or {}
    final = stats.get("final_success", float("nan"))
    return (final if math.isfinite(final) else -1.0, -stats.get("steps_to_threshold", math.inf))


def connect(server: str, model: str, api_key: str | None = None) -> JudgeClient:
    """The client the loop asks through: no cache (every round must be a fresh sample), one
    request at a time, ten minutes a reply (a model writing ``n`` programs is slow)."""
    return JudgeClient(server, model, cache=None, concurrency=1, timeout=600.0, api_key=api_key)


def run_text2reward(
    recipe: RunRecipe,
    client: JudgeClient,
    config: Text2RewardConfig,
    out: Path,
    say: Callable[[str], None] = lambda line: None,
) -> list[Candidate]:
    """The loop on ``recipe``'s world, trainer and estimator (its first method is the baseline),
    writing into ``out``: each candidate's file, ``candidates.jsonl``, ``conversation.jsonl``,
    ``report.md`` and ``best_reward.py``. Returns every candidate, in order."""
    world = recipe.world
    if not (hasattr(world, "describe") and hasattr(world, "sample_transitions")):
        raise ConfigError(
            "world",
            f"the {world.component_name} world cannot describe its transitions "  # type: ignore[attr-defined]
            "to a model (the control world can)",
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            "--out", f"{out} exists and is not an empty folder: nothing is overwritten"
        )
    threshold = float(getattr(world, "success_threshold", 0.9))
    baseline_name, baseline = next(iter(recipe.methods.items()))
    trial = world.sample_transitions(config.trial_transitions, config.seed)
    trial_sandbox = reward_sandbox(config.timeout, config.memory_mb, config.trial_transitions)

    def train(method: Recipe) -> MethodRun:
        runs: list[MethodRun] = []
        job = Job(world, recipe.trainer, config.seed, {method.name or "method": method})
        run_job(job, None, lambda key, run: runs.append(run))
        return runs[0]

    messages: list[tuple[str, str]] = [
        ("system", SYSTEM),
        ("user", f"{world.describe()}\n\nWrite compute_reward for this task."),
    ]
    conversation: list[dict[str, Any]] = []
    candidates: list[Candidate] = []
    best: Candidate | None = None
    base_stats: dict[str, Any] = {}
    for round_ in range(1, config.rounds + 1):
        request = ChatRequest(
            tuple(messages),
            max_tokens=config.max_tokens,
            temperature=config.temperature,
            n=config.candidates,
            seed=config.seed * 1000 + round_,
        )
        replies = client.ask([request])[0].texts
        conversation.append({"round": round_, "messages": [list(m) for m in messages]})
        if round_ == 1:  # the server answered: now there is something to write
            out.mkdir(parents=True, exist_ok=True)
            say(f"baseline '{baseline_name}': training")
            base_stats = training_statistics(train(baseline), threshold, 1.0)
            base_stats["code_reward_per_step"] = 0.0
            say(f"baseline '{baseline_name}': {describe_statistics(base_stats, threshold)}")
        folder = out / f"round-{round_}"
        folder.mkdir(exist_ok=True)
        this_round: list[Candidate] = []
        for index, reply in enumerate(replies, 1):
            code = extract_code(reply)
            path = folder / f"candidate-{index}.py"
            path.write_text(code, encoding="utf-8")
            candidate = _check(code, str(path), trial, trial_sandbox)
            candidate = dataclasses.replace(candidate, round=round_, index=index)
            if candidate.stage == "trained":
                method = Recipe.from_dict(
                    {
                        "name": f"round-{round_}-candidate-{index}",
                        "estimator": dict(baseline.estimator),
                        "signals": {
                            "code": {
                                "kind": "reward_code",
                                "file": str(path),
                                "timeout": config.timeout,
                                "memory_mb": config.memory_mb,
                            }
                        },
                        "transforms": [
                            {"kind": "combine", "weights": {"reward": config.env_weight, "code": 1}}
                        ],
                    },
                    f"round {round_} candidate {index}",
                )
                try:
                    run = train(method)
                except ValidationError as error:  # it passed the trial, then failed on a batch
                    candidate = dataclasses.replace(candidate, stage="training", problem=str(error))
                else:
                    stats = training_statistics(run, threshold, config.env_weight)
                    candidate = dataclasses.replace(candidate, statistics=stats)
            if candidate.statistics is not None:
                say(
                    f"round {round_} candidate {index}: "
                    f"{describe_statistics(candidate.statistics, threshold)}"
                )
            else:
                say(f"round {round_} candidate {index}: rejected ({candidate.problem})")
            this_round.append(candidate)
        candidates += this_round
        trained = [c for c in candidates if c.stage == "trained"]
        best = max(trained, key=_rank) if trained else None
        messages = messages[:2]
        if best is not None and best.code is not None:
            messages.append(("assistant", f"```python\n{best.code.rstrip()}\n```"))
        messages.append(("user", _feedback(this_round, best, base_stats, baseline_name, threshold)))
        # after every round: a server that fails in a later round leaves this one's results
        _write_results(out, candidates, conversation, best, base_stats, baseline_name, threshold)
    return candidates


def _check(code: str, where: str, trial: tuple[np.ndarray, ...], sandbox: Any) -> Candidate:
    try:
        check_reward_source(code, where)
    except RewardCodeError as error:
        return Candidate(0, 0, code, error.stage, error.problem)
    try:
        run_reward_code(code, trial, sandbox, where)
    except RewardCodeError as error:
        return Candidate(0, 0, code, "trial", error.problem)
    return Candidate(0, 0, code, "trained")


def _feedback(
    this_round: list[Candidate],
    best: Candidate | None,
    base: dict[str, Any],
    baseline_name: str,
    threshold: float,
) -> str:
    lines = [
        f"Results of round {this_round[0].round}. The baseline ({baseline_name}, the environment's "
        f"reward alone): {describe_statistics(base, threshold)}."
    ]
    for candidate in this_round:
        if candidate.statistics is None:
            lines.append(
                f"Candidate {candidate.index}: rejected at the {candidate.stage} check: "
                f"{candidate.problem}"
            )
        else:
            lines.append(
                f"Candidate {candidate.index}: "
                f"{describe_statistics(candidate.statistics, threshold)}"
            )
    if best is not None:
        lines.append(
            f"The best so far is candidate {best.index} of round {best.round}, shown above. "
            "Write an improved compute_reward: keep what helped, change what did not."
        )
    else:
        lines.append("No candidate could be trained yet. Write a compute_reward that can.")
    return "\n".join(lines)


def _write_results(
    out: Path,
    candidates: list[Candidate],
    conversation: list[dict[str, Any]],
    best: Candidate | None,
    base: dict[str, Any],
    baseline_name: str,
    threshold: float,
) -> None:
    def finite(value: Any) -> Any:  # strict JSON: a never-reached threshold or NaN is null
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return [finite(v) for v in value] if isinstance(value, list) else value

    def dump(name: str, rows: list[dict[str, Any]]) -> None:
        lines = [
            json.dumps({k: finite(v) for k, v in row.items()}, allow_nan=False) for row in rows
        ]
        with atomic_path(out / name) as path:
            path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    dump(
        "candidates.jsonl",
        [{"round": 0, "candidate": baseline_name, **base}] + [c.record() for c in candidates],
    )
    dump("conversation.jsonl", conversation)
    if best is not None and best.code is not None:
        with atomic_path(out / "best_reward.py") as path:
            path.write_text(best.code, encoding="utf-8")

    def steps(stats: dict[str, Any]) -> str:
        value = stats["steps_to_threshold"]
        return f"{value:,.0f}" if math.isfinite(value) else "never"

    base_steps = base["steps_to_threshold"]
    lines = [
        f"# Text2Reward loop: {len(conversation)} rounds, {len(candidates)} candidates",
        "",
        f"Baseline `{baseline_name}`: {describe_statistics(base, threshold)}.",
        "",
        f"| round | candidate | stage | final success | steps to {threshold:.0%} | vs baseline "
        "| held-out success | its reward per step | problem |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in candidates:
        s = c.statistics
        if s is None:
            lines.append(f"| {c.round} | {c.index} | {c.stage} | - | - | - | - | - | {c.problem} |")
            continue
        ratio = (
            f"{s['steps_to_threshold'] / base_steps:.2f}x"
            if math.isfinite(s["steps_to_threshold"]) and math.isfinite(base_steps)
            else "-"
        )
        lines.append(
            f"| {c.round} | {c.index} | trained | {s['final_success']:.2f} | {steps(s)} | {ratio} "
            f"| {s['held_out_success']:.2f} | {s['code_reward_per_step']:+.4f} | |"
        )
    if best is not None:
        lines += ["", f"Best: round {best.round}, candidate {best.index} (`best_reward.py`)."]
    with atomic_path(out / "report.md") as path:
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


__all__ = [
    "Candidate",
    "Text2RewardConfig",
    "connect",
    "extract_code",
    "run_text2reward",
    "training_statistics",
]
