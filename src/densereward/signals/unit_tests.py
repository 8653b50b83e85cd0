"""Unit-test rewards: each response's program run against its tests in the sandbox, scored by
partial credit weighted by how hard each test is for the group (VeRPO), or plain pass/fail.

VeRPO (Verifiable Dense Reward Policy Optimization) builds a dense reward from *weighted partial
success*: each unit test gets a difficulty weight estimated from execution statistics during
training, and a response earns the weights of the tests it passes. What is implemented here: the
difficulty of test ``k`` is estimated within the group ``g`` of responses to the same prompt (one
GRPO group, the execution statistics of this update), smoothed by a Laplace pseudo-count ``α``:

    p̂_gk = (Σ_{i∈g} pass_ik + α) / (n_g + 2α),      w_gk = 1 − p̂_gk

    r_i = Σ_k w_gk · pass_ik / Σ_k w_gk  +  β · 𝟙[all tests of i pass]

so a test every response passes weighs little (``α / (n_g + 2α)``) and a test few pass weighs much.
``β`` (``outcome_bonus``) is VeRPO's integration of the global execution outcome. ``credit:
uniform`` uses ``w = 1`` (the fraction passed) and ``credit: binary`` is the pass/fail baseline
``r_i = 𝟙[all pass]``. The score lands on each trajectory's last step (the column ``name``); per
trajectory, ``{name}_passed`` is the fraction of tests passed, ``{name}_all`` whether all passed,
and the text column ``{name}_failures`` a JSON list of ``{"test": k, "reason": ...}``.

Every distinct program runs once, in its own sandboxed process, all its tests inside it
(``Sandbox.map`` over the candidates): a harness imports the program, calls the function on each
test's arguments under a per-test alarm, and sends back only the *outputs*; expected values never
enter the sandbox, so a program cannot read them and forge a pass, and outputs are compared here. A
test that raises, times out, or returns something that is not JSON fails with that reason; a
program that cannot be loaded, or that takes the whole process down (a limit, ``os._exit``), fails
every test with the sandbox's reason.

Tests come from the text column ``tests`` (a JSON list of ``{"args": [...], "expected": v}`` per
trajectory), or, when it is absent and ``inputs`` is set, from the reference program in
``text["answer"]`` run (sandboxed, once per distinct reference) on those inputs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from densereward.core.components import Signal, SignalContext
from densereward.core.errors import ConfigError, ValidationError
from densereward.core.parameters import Count, NonNegative, Positive, Real
from densereward.core.registry import register
from densereward.core.trajectories import Trajectories
from densereward.sandbox import Program, Sandbox, SandboxResult, SandboxUnavailable, probe

_HARNESS = """
import importlib, json, signal


class _Timeout(BaseException):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def _describe(error):
    text = str(error).splitlines()[0] if str(error) else ""
    return type(error).__name__ + (": " + text[:200] if text else "")


def run_tests(module, function, cases, budget):
    signal.signal(signal.SIGALRM, _alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, budget)
        candidate = importlib.import_module(module)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:
        return {"error": "loading the program took over %g s" % budget}
    except BaseException as error:
        signal.setitimer(signal.ITIMER_REAL, 0)
        return {"error": "loading the program failed: " + _describe(error)}
    target = getattr(candidate, function, None)
    if not callable(target):
        return {"error": "the program defines no function %r" % function}
    outputs = []
    for args in cases:
        try:
            signal.setitimer(signal.ITIMER_REAL, budget)
            value = target(*args)
            signal.setitimer(signal.ITIMER_REAL, 0)
            outputs.append([True, json.loads(json.dumps(value))])
        except _Timeout:
            outputs.append([False, "timed out after %g s" % budget])
        except (TypeError, ValueError) as error:
            signal.setitimer(signal.ITIMER_REAL, 0)
            outputs.append([False, _describe(error)])
        except BaseException as error:
            signal.setitimer(signal.ITIMER_REAL, 0)
            outputs.append([False, _describe(error)])
    return {"outputs": outputs}
"""

_CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


def extract_program(
    response: str, extract: str, template: str, answer_mark: str = "#"
) -> str | None:
    """The program a response holds: the text after the last ``answer_mark`` (``answer``), the
    last fenced code block (``code_block``, else the whole response) or the whole response,
    placed into ``template`` at ``{program}``; ``None`` when there is no answer.

    >>> extract_program("x*2+3", "response", "def f(x):\\n    return {program}\\n")
    'def f(x):\\n    return x*2+3\\n'
    >>> extract_program("7-5=2ки#x*2+3", "answer", "{program}")
    'x*2+3'
    """
    if extract == "answer":
        _, mark, tail = response.rpartition(answer_mark)
        if not mark:
            return None
        program = tail.strip()
    elif extract == "code_block":
        blocks = _CODE_BLOCK.findall(response)
        program = blocks[-1] if blocks else response
    else:
        program = response
    return template.replace("{program}", program)


def parse_tests(text: str, where: str) -> list[tuple[list[Any], Any]]:
    """``[{"args": [...], "expected": v}, ...]`` as ``(args, expected)`` pairs."""
    try:
        cases = json.loads(text)
    except ValueError as error:
        raise ValidationError(where, f"tests are not JSON: {error}") from None
    if not isinstance(cases, list):
        raise ValidationError(where, "tests must be a JSON list")
    out = []
    for k, case in enumerate(cases):
        if not isinstance(case, dict) or "expected" not in case:
            raise ValidationError(where, f"test {k} needs 'expected' (and 'args')")
        args = case.get("args", [])
        if not isinstance(args, list):
            raise ValidationError(where, f"test {k}: 'args' must be a list")
        out.append((args, case["expected"]))
    return out


def same_value(got: Any, expected: Any) -> bool:
    """JSON values equal; numbers (not booleans) to ``1e-9`` relative tolerance."""
    numbers = (int, float)
    if (
        isinstance(got, numbers)
        and isinstance(expected, numbers)
        and not isinstance(got, bool)
        and not isinstance(expected, bool)
    ):
        return math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(got, bool) or isinstance(expected, bool):
        return type(got) is type(expected) and got == expected
    if isinstance(got, list) and isinstance(expected, list):
        return len(got) == len(expected) and all(map(same_value, got, expected))
    if isinstance(got, dict) and isinstance(expected, dict):
        return got.keys() == expected.keys() and all(same_value(got[k], expected[k]) for k in got)
    return bool(got == expected)


def weighted_partial_credit(
    passed: torch.Tensor,
    mask: torch.Tensor,
    group: torch.Tensor,
    credit: str = "weighted",
    smoothing: float = 1.0,
    outcome_bonus: float = 0.0,
) -> torch.Tensor:
    """Scores ``[B]`` from a pass matrix ``[B, K]`` (``mask`` marks real tests; responses of one
    group share their tests), group labels ``[B]`` in ``0..G-1``; see the module docstring.

    >>> passed = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    >>> mask = torch.ones(3, 3)
    >>> weighted_partial_credit(passed, mask, torch.tensor([0, 0, 0]), smoothing=0.0)
    tensor([0.3333, 0.0000, 1.0000], dtype=torch.float64)
    """
    passed = passed.to(torch.float64) * mask
    mask = mask.to(torch.float64)
    all_pass = ((passed == mask).all(1) & (mask.sum(1) > 0)).to(torch.float64)
    if credit == "binary":
        return all_pass
    if credit == "uniform":
        weights = mask
    else:
        groups = int(group.max()) + 1 if len(group) else 0
        counts = torch.zeros(groups, passed.shape[1], dtype=torch.float64).index_add_(
            0, group, passed
        )
        sizes = torch.zeros(groups, dtype=torch.float64).index_add_(
            0, group, torch.ones(len(group), dtype=torch.float64)
        )
        rate = (counts + smoothing) / (sizes[:, None] + 2 * smoothing)
        weights = (1.0 - rate)[group] * mask
    total = weights.sum(1)
    fraction = passed.sum(1) / mask.sum(1).clamp(min=1)
    # all weights 0 only when α = 0 and every response of the group passes every test: then the
    # response passed all of them, and the weighted mean is the plain fraction (1)
    score = torch.where(total > 0, (weights * passed).sum(1) / total.clamp(min=1e-300), fraction)
    return score + outcome_bonus * all_pass


@register("signal", "unit_tests", paper="VeRPO (Verifiable Dense Reward Policy Optimization)")
@dataclass(frozen=True)
class UnitTestSignal(Signal):
    """Unit-test reward on each response's last step, run in the sandbox (module docstring).

    ``r_i = Σ_k w_gk pass_ik / Σ_k w_gk + β·𝟙[all pass]``, ``w_gk = 1 − (Σ_{i∈g} pass_ik + α) /
    (n_g + 2α)`` (``credit: weighted``, VeRPO); ``w = 1`` (``uniform``); ``𝟙[all pass]``
    (``binary``). Reads ``text["response"]`` and ``text[tests]`` (or ``text["answer"]`` with
    ``inputs``) and the ``group`` column; writes step column ``name`` and diagnostics.
    """

    credit: Literal["weighted", "uniform", "binary"] = "weighted"
    """VeRPO's difficulty-weighted partial credit, the plain fraction passed, or pass/fail"""
    smoothing: NonNegative = 1.0
    """α: Laplace pseudo-count on each test's pass rate in the group"""
    outcome_bonus: Real = 0.0
    """β: added when every test passes (VeRPO's global-outcome term)"""
    tests: str = "tests"
    """text column with each trajectory's tests as JSON"""
    inputs: str | None = None
    """when the tests column is absent: a JSON list of argument lists; expected values come from
    the reference program in ``text["answer"]``"""
    extract: Literal["answer", "code_block", "response"] = "code_block"
    """where the program is in a response: after the answer mark, the last fenced block, all"""
    template: str = "{program}"
    """the program's source with the extracted text at ``{program}`` (e.g. a function header)"""
    function: str = "f"
    """the function the tests call"""
    test_timeout: Positive = 1.0
    """seconds each test may run before it fails as timed out"""
    memory_mb: Count = 256
    """address space of each sandboxed run"""
    concurrency: Count = 2
    """sandboxed runs at once"""

    def __post_init__(self) -> None:
        if "{program}" not in self.template:
            raise ConfigError("template", "must contain {program}")
        if not self.function.isidentifier():
            raise ConfigError("function", f"not a Python name: {self.function!r}")
        if self.inputs is not None:
            try:
                values = json.loads(self.inputs)
            except ValueError as error:
                raise ConfigError("inputs", f"not JSON: {error}") from None
            if not isinstance(values, list) or not all(isinstance(v, list) for v in values):
                raise ConfigError("inputs", "must be a JSON list of argument lists")

    def bind(self, context: SignalContext) -> UnitTestRunner:
        mark = context.text_format.answer_mark if context.text_format is not None else "#"
        refusal = probe().refusal()
        if refusal is not None:  # no sandbox on this machine: fail before training starts
            raise SandboxUnavailable(f"signals.unit_tests: sandbox unavailable: {refusal}")
        return UnitTestRunner(self, Sandbox(memory_mb=self.memory_mb, max_processes=4), mark)


@dataclass
class UnitTestRunner:
    """``UnitTestSignal`` bound: its sandbox (the wall-clock limit is set per call: every test's
    budget plus 5 s) and the expected outputs of the references seen."""

    spec: UnitTestSignal
    sandbox: Sandbox
    answer_mark: str
    references: dict[str, list[tuple[list[Any], Any]]] = field(default_factory=dict)

    def run(self, sources: Sequence[str | None], cases: Sequence[Sequence[list[Any]]]) -> list[Any]:
        """Outputs per program: a list of ``(ok, value_or_reason)`` per case, or a reason
        (text) why none ran. Each distinct (program, cases) runs once."""
        keys = [
            None if s is None else (s, json.dumps(list(c)))
            for s, c in zip(sources, cases, strict=True)
        ]
        unique = list(dict.fromkeys(k for k in keys if k is not None))
        timeout = self.spec.test_timeout * max([len(c) for c in cases] or [1]) + 5.0
        sandbox = dataclasses.replace(self.sandbox, timeout=timeout)
        programs = [
            Program(
                _HARNESS,
                "run_tests",
                ("candidate", self.spec.function, json.loads(cases_text), self.spec.test_timeout),
                name="harness.py",
                files={"candidate.py": source},
            )
            for source, cases_text in unique
        ]
        results = sandbox.map(programs, concurrency=self.spec.concurrency)
        by_key = {
            key: _outputs(result, len(json.loads(key[1])))
            for key, result in zip(unique, results, strict=True)
        }
        return ["no program in the response" if key is None else by_key[key] for key in keys]

    def tests_of(self, batch: Trajectories) -> list[list[tuple[list[Any], Any]]]:
        if self.spec.tests in batch.text:
            return [
                parse_tests(text, f"text.{self.spec.tests}[{i}]")
                for i, text in enumerate(batch.text[self.spec.tests])
            ]
        if self.spec.inputs is None or "answer" not in batch.text:
            raise ValidationError(
                f"text.{self.spec.tests}",
                "no tests column, and no reference (text['answer'] with inputs) to derive them",
            )
        inputs: list[list[Any]] = json.loads(self.spec.inputs)
        answers = list(batch.text["answer"])
        missing = [a for a in dict.fromkeys(answers) if a not in self.references]
        if missing:
            sources = [self._program(answer, "response") for answer in missing]
            for answer, outputs in zip(
                missing, self.run(sources, [inputs] * len(missing)), strict=True
            ):
                if isinstance(outputs, str) or not all(ok for ok, _ in outputs):
                    raise ValidationError("text.answer", f"reference {answer!r} fails: {outputs}")
                self.references[answer] = [
                    (args, value) for args, (_, value) in zip(inputs, outputs, strict=True)
                ]
        return [self.references[a] for a in answers]

    def _program(self, text: str, extract: str | None = None) -> str | None:
        return extract_program(
            text, extract or self.spec.extract, self.spec.template, self.answer_mark
        )

    def __call__(self, batch: Trajectories, name: str) -> Trajectories:
        tests = self.tests_of(batch)
        sources = [self._program(r) for r in batch.text["response"]]
        outputs = self.run(sources, [[args for args, _ in t] for t in tests])
        width = max([len(t) for t in tests] or [0])
        passed = torch.zeros(len(batch), width, dtype=torch.float64)
        mask = torch.zeros(len(batch), width, dtype=torch.float64)
        failures = []
        for i, (cases, got) in enumerate(zip(tests, outputs, strict=True)):
            mask[i, : len(cases)] = 1.0
            reasons = []
            for k, (_, expected) in enumerate(cases):
                if isinstance(got, str):
                    reasons.append({"test": k, "reason": got})
                elif not got[k][0]:
                    reasons.append({"test": k, "reason": str(got[k][1])})
                elif same_value(got[k][1], expected):
                    passed[i, k] = 1.0
                else:
                    shown = json.dumps(got[k][1])[:80]
                    reasons.append({"test": k, "reason": f"returned {shown}, expected {expected}"})
            failures.append(json.dumps(reasons))
        group = batch.groups.index
        score = weighted_partial_credit(
            passed,
            mask,
            group.cpu(),
            self.spec.credit,
            self.spec.smoothing,
            self.spec.outcome_bonus,
        )
        steps = torch.zeros(batch.num_steps, dtype=torch.float64)
        steps.index_copy_(0, batch.segments.last.cpu(), score)
        fraction = passed.sum(1) / mask.sum(1).clamp(min=1)
        all_pass = ((passed == mask).all(1) & (mask.sum(1) > 0)).to(torch.float64)
        device = batch.device
        out = batch.with_steps(**{name: steps.to(device)}).with_episodes(
            **{f"{name}_passed": fraction.to(device), f"{name}_all": all_pass.to(device)}
        )
        return out._derive(text={**out.text, f"{name}_failures": failures})


def _outputs(result: SandboxResult, cases: int) -> Any:
    """The harness's outputs, or one line saying why the program produced none."""
    if result.status == "limit":
        return f"stopped by the sandbox's {result.limit} limit: {result.error}"
    if not result.ok:
        return f"the program crashed: {result.error}"
    value = result.value
    if isinstance(value, dict) and "error" in value:
        return str(value["error"])
    outputs = value.get("outputs") if isinstance(value, dict) else None
    if (
        not isinstance(outputs, list)
        or len(outputs) != cases
        or not all(isinstance(o, list) and len(o) == 2 and isinstance(o[0], bool) for o in outputs)
    ):
        return "the program sent back no well-formed outputs"
    return outputs


__all__ = [
    "UnitTestRunner",
    "UnitTestSignal",
    "extract_program",
    "parse_tests",
    "same_value",
    "weighted_partial_credit",
]
