"""A judge that is right by construction, behind the real OpenAI chat protocol: a FastAPI app that
reads the shipped prompts' layout and checks arithmetic steps (``3*2=6`` is true, ``3*2=7`` is
not; an answer step ``#6`` is true). Tests of the judge signals compare what a signal makes of
its replies with what the rule says, so a signal that misreads, misplaces or misweights a reply
fails. ``mode`` makes it misbehave: ``garbage`` (unparseable replies), ``biased_a`` (always
prefers the first solution shown)."""

from __future__ import annotations

import math
import re
from typing import Any

from fastapi import FastAPI, Request

STEP_LINE = re.compile(r"^Step (\d+): (.*)$", re.M)


def step_is_true(step: str) -> bool:
    step = step.strip()
    if step.startswith("#"):
        return True
    if not re.fullmatch(r"[\d+\-*/() ]+=-?\d+", step):
        return False
    left, right = step.split("=")
    try:
        return bool(eval(left) == int(right))  # the pattern admits only digits and operators
    except (SyntaxError, ZeroDivisionError):
        return False


def solution_steps(text: str) -> list[str]:
    return [s for _, s in STEP_LINE.findall(text)]


def true_share(steps: list[str]) -> float:
    return sum(map(step_is_true, steps)) / max(len(steps), 1)


def completion(texts: list[str], logprobs: list[Any] | None = None) -> dict[str, Any]:
    choices = [
        {
            "index": k,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "stop",
            "logprobs": None if logprobs is None else {"content": logprobs[k]},
        }
        for k, text in enumerate(texts)
    ]
    return {"object": "chat.completion", "model": "rule", "choices": choices}


def yes_no_logprobs(p_yes: float) -> list[dict[str, Any]]:
    top = [
        {"token": "yes", "logprob": math.log(p_yes)},
        {"token": "no", "logprob": math.log(1 - p_yes)},
    ]
    top.sort(key=lambda t: -t["logprob"])
    return [{"token": top[0]["token"], "logprob": top[0]["logprob"], "top_logprobs": top}]


def answer(content: str, n: int, want_logprobs: bool, mode: str) -> dict[str, Any]:
    if mode == "garbage":
        return completion(["I would rather not say."] * n)
    if "A grader wrote this critique" in content:  # SPCT's meta-judge: trusts high scores
        score = float(re.findall(r"Score: (\d+)", content)[-1])
        p = 0.05 + 0.9 * score / 10
        return completion(["yes" if p > 0.5 else "no"] * n, [yes_no_logprobs(p)] * n)
    if "Solution A:" in content:
        a, b = content.split("Solution A:")[1].split("Solution B:")
        if mode == "biased_a":
            return completion(["Winner: A"] * n)
        sa, sb = true_share(solution_steps(a)), true_share(solution_steps(b))
        winner = "A" if sa > sb else "B" if sb > sa else "tie"
        return completion([f"A has {sa:.2f}, B {sb:.2f}.\nWinner: {winner}"] * n)
    steps = solution_steps(content)
    if "Answer yes or no" in content and "critique" not in content:  # one step
        index = int(re.findall(r"Is step (\d+) correct", content)[0])
        p = 0.9 if step_is_true(steps[index - 1]) else 0.2
        verdict = "yes" if p > 0.5 else "no"
        return completion([verdict] * n, [yes_no_logprobs(p)] * n if want_logprobs else None)
    if "Rubric:" in content:
        false = [str(k + 1) for k, s in enumerate(steps) if not step_is_true(s)]
        score = 10 * true_share(steps)
        unsupported = ", ".join(false) or "none"
        return completion([f"Score: {score:.12g}/10\nUnsupported steps: {unsupported}"] * n)
    if "Checklist:" in content:
        items = re.findall(r"^(\d+)\. ", content.split("Checklist:")[1], re.M)
        return completion(["\n".join(f"{k}: {'yes' if int(k) % 2 else 'no'}" for k in items)] * n)
    if "Principles:" in content:  # choice k scores the true share ±k: the vote averages it out
        base = 10 * true_share(steps)
        scores = [min(10.0, max(0.0, base + (k - (n - 1) / 2))) for k in range(n)]
        return completion([f"Principles: ...\nCritique: ...\nScore: {s:.12g}" for s in scores])
    if "Incorrect steps" in content:
        false = [str(k + 1) for k, s in enumerate(steps) if not step_is_true(s)]
        return completion([f"Critique done.\nIncorrect steps: {', '.join(false) or 'none'}"] * n)
    return completion(["?"] * n)


def make_rule_judge(mode: str = "right") -> tuple[FastAPI, dict[str, int]]:
    """The app and a counter of the chat requests it answered."""
    app = FastAPI()
    counts = {"chat": 0}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        body = await request.json()
        counts["chat"] += 1
        content = body["messages"][-1]["content"]
        return answer(content, int(body.get("n", 1)), bool(body.get("logprobs")), mode)

    return app, counts
