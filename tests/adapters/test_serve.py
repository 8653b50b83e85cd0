"""``densereward serve`` and the local ``reward_func``, driven by OpenRLHF's own client.

One real uvicorn server (a thread, loopback, free port) is shared by the module; the CLI is
started as a real subprocess. Expected values come from a second ``TextScorer`` on the same
files, called in this process.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from densereward.adapters.openrlhf import split_queries
from densereward.adapters.server import make_app
from densereward.adapters.text import TextScorer
from densereward.models.language import build_causal_lm
from densereward.models.prm import ProcessRewardModel
from densereward.worlds.reasoning.tasks import Difficulty, TaskSpec, sample_problems
from densereward.worlds.reasoning.tokenizer import build_tokenizer
from tests.servers import running

openrlhf_agent = pytest.importorskip("openrlhf.utils.agent")
uvicorn = pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[2]
STEP_TAG = "ки"
OUTCOME = "tests.adapters.test_serve:grade"
MAX_BYTES = 64 * 1024
MAX_BATCH = 32
RECIPE = """\
name: serve-test
signals: {prm: {kind: prm, model: prm}}
estimator: {kind: step_grpo, process: prm}
"""


def grade(prompts: list[str], responses: list[str], labels: list[object]) -> list[float]:
    """1 when the text after the last ``#`` is the label, else 0; the label ``"nan"`` grades NaN
    (a broken outcome function, for the error path)."""
    return [
        math.nan if label == "nan" else float(response.rpartition("#")[2] == str(label))
        for response, label in zip(responses, labels, strict=True)
    ]


@dataclass(frozen=True)
class Files:
    recipe: Path
    tokenizer: Path
    prm: Path


@dataclass(frozen=True)
class Samples:
    """OpenRLHF-style requests: ``query = decode(prompt_ids + response_ids + [eos])``."""

    queries: list[str]
    prompts: list[str]
    responses: list[str]
    labels: list[object]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    folder = tmp_path_factory.mktemp("serve")
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(folder / "tokenizer")
    prm = ProcessRewardModel(build_causal_lm(tokenizer, layers=1, width=32, heads=2))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a non-zero head, so step rewards differ between steps
        prm.head.weight.copy_(torch.randn(prm.head.weight.shape, generator=generator))
        prm.head.bias.fill_(0.3)
    prm.save_pretrained(folder / "prm")
    (folder / "recipe.yaml").write_text(RECIPE)
    return Files(folder / "recipe.yaml", folder / "tokenizer", folder / "prm")


@pytest.fixture(scope="module")
def reference(files: Files) -> Iterator[TextScorer]:
    scorer = scorer_for(files)
    yield scorer
    scorer.close()


@pytest.fixture(scope="module")
def samples(reference: TextScorer) -> Samples:
    tokenizer = reference.tokenizer
    spec = TaskSpec(("arithmetic", "lists"), Difficulty(min_ops=1, max_ops=3))
    prompts, responses, labels = [], [], []
    for index, sample in enumerate(sample_problems(spec, 12, seed=1)):
        problem = sample.problem
        response = problem.response
        if index % 3 == 1:  # a wrong final answer
            response = response.rpartition("#")[0] + "#0"
        prompts.append(problem.prompt + "=?")
        responses.append(response)
        labels.append(problem.response.rpartition("#")[2])
    queries = [
        tokenizer.decode(
            tokenizer(p, add_special_tokens=False)["input_ids"]
            + tokenizer(r, add_special_tokens=False)["input_ids"]
            + [tokenizer.eos_token_id],
            skip_special_tokens=False,
        )
        for p, r in zip(prompts, responses, strict=True)
    ]
    return Samples(queries, prompts, responses, labels)


def scorer_for(files: Files) -> TextScorer:
    return TextScorer.from_files(
        files.recipe,
        files.tokenizer,
        models={"prm": files.prm},
        outcome=OUTCOME,
        step_tag=STEP_TAG,
    )


@pytest.fixture(scope="module")
def url(files: Files) -> Iterator[str]:
    scorer = scorer_for(files)
    app = make_app(scorer, max_request_bytes=MAX_BYTES, max_batch=MAX_BATCH)
    with running(app, timeout_graceful_shutdown=None) as base:
        yield base
    scorer.close()


def fetch(url: str, queries: list[str], prompts: list[str], labels: list[object]) -> dict:
    """One request through OpenRLHF's own HTTP client."""
    executor = openrlhf_agent.SingleTurnAgentExecutor(remote_rm_url=f"{url}/get_reward")
    (reply,) = asyncio.run(executor._fetch_rewards_via_http(queries, prompts, labels))
    return reply


def test_openrlhf_client_gets_the_in_process_rewards(
    url: str, samples: Samples, reference: TextScorer
) -> None:
    reply = fetch(url, samples.queries, samples.prompts, samples.labels)
    expected = reference(samples.prompts, samples.responses, samples.labels)
    np.testing.assert_allclose(reply["rewards"], expected.totals, atol=1e-6, rtol=0)
    np.testing.assert_allclose(reply["scores"], expected.totals, atol=1e-6, rtol=0)
    assert len(reply["step_rewards"]) == len(samples.queries)
    for got, want in zip(reply["step_rewards"], expected.per_response(), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    ends = np.split(expected.char_ends, expected.offsets[1:-1])
    assert reply["step_ends"] == [row.tolist() for row in ends]
    assert set(reply["extra_logs"]) == {"outcome", "process", "steps"}
    assert reply["extra_logs"]["outcome"] == pytest.approx(expected.outcome.mean())
    assert 0 < expected.outcome.mean() < 1  # both right and wrong answers are in the batch


def test_query_parsing_strips_the_end_token_and_keeps_the_response(
    samples: Samples, reference: TextScorer
) -> None:
    padded = [q + "<pad><pad>" for q in samples.queries]
    assert split_queries(padded, samples.prompts, reference.tokenizer) == samples.responses


def test_concurrent_single_sample_requests_match_sequential_ones(
    url: str, samples: Samples
) -> None:
    rows = list(zip(samples.queries[:8], samples.prompts[:8], samples.labels[:8], strict=True))
    sequential = [fetch(url, [q], [p], [label]) for q, p, label in rows]
    executor = openrlhf_agent.SingleTurnAgentExecutor(remote_rm_url=f"{url}/get_reward")

    async def together() -> list[list[dict]]:
        return await asyncio.gather(
            *(executor._fetch_rewards_via_http([q], [p], [label]) for q, p, label in rows)
        )

    concurrent = [replies[0] for replies in asyncio.run(together())]
    for alone, joined in zip(sequential, concurrent, strict=True):
        np.testing.assert_allclose(joined["rewards"], alone["rewards"], atol=1e-6, rtol=0)
        np.testing.assert_allclose(
            joined["step_rewards"][0], alone["step_rewards"][0], atol=1e-6, rtol=0
        )
        assert joined["extra_logs"] == pytest.approx(alone["extra_logs"], abs=1e-6)


GOOD = {"query": ["1+2=?1+2=3ки#3<eos>"], "prompts": ["1+2=?"], "labels": ["3"]}


def _body(**fields: object) -> bytes:
    return json.dumps({**GOOD, **fields}).encode()


def _chunks(total: int) -> Iterator[bytes]:
    for _ in range(total // 4096):
        yield b" " * 4096


MALFORMED = {
    "not_json": (b"this is not json", 422, "body: Invalid JSON"),
    "missing_query": (json.dumps({"prompts": ["1+2=?"]}).encode(), 422, "field 'query'"),
    "query_not_a_list": (_body(query="1+2=?1+2=3"), 422, "field 'query'"),
    "query_item_not_a_string": (_body(query=[7]), 422, "field 'query[0]'"),
    "prompt_item_null": (_body(prompts=[None]), 422, "field 'prompts[0]'"),
    "lengths_differ": (_body(prompts=["1+2=?", "2+2=?"]), 422, "field 'prompts': 2 prompts"),
    "labels_differ": (_body(labels=[3, 4]), 422, "field 'labels': 2 labels for 1"),
    "too_many_queries": (
        _body(query=GOOD["query"] * 33, prompts=GOOD["prompts"] * 33, labels=["3"] * 33),
        422,
        "at most 32 per request",
    ),
    "over_the_size_limit": (_body(labels=["x" * MAX_BYTES]), 413, "over the limit"),
    "chunked_over_the_size_limit": (_chunks, 413, "over the limit"),
    "query_without_its_prompt": (
        _body(query=[*GOOD["query"], "9*9=?1+2=3<eos>"], prompts=["1+2=?", "1+2=?"], labels=[3, 3]),
        400,
        "field 'query[1]': does not start with prompts[1]",
    ),
    "nan_outcome": (
        _body(query=GOOD["query"] * 2, prompts=GOOD["prompts"] * 2, labels=["3", "nan"]),
        400,
        "trajectory 1: field 'outcome': NaN is not a finite number",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_request_is_refused_in_one_line(url: str, case: str) -> None:
    body, status, detail = MALFORMED[case]
    content = body(MAX_BYTES * 2) if callable(body) else body
    with httpx.Client(base_url=url, timeout=30) as client:
        reply = client.post(
            "/get_reward", content=content, headers={"content-type": "application/json"}
        )
        assert reply.status_code == status, reply.text
        message = reply.json()["detail"]
        assert detail in message
        assert "\n" not in message and "Traceback" not in message
        # the server still answers, and answers correctly
        after = client.post("/get_reward", json=GOOD)
        assert after.status_code == 200
        assert after.json()["extra_logs"]["outcome"] == 1.0


def test_health_names_the_recipe(url: str) -> None:
    reply = httpx.get(f"{url}/health", timeout=30)
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok", "recipe": "serve-test"}


def test_local_reward_func_file_matches_in_process(
    files: Files, samples: Samples, reference: TextScorer, tmp_path: Path
) -> None:
    script = tmp_path / "reward.py"
    script.write_text(
        "from densereward.adapters.openrlhf import make_reward_func\n"
        f"reward_func = make_reward_func({str(files.recipe)!r}, {str(files.tokenizer)!r}, "
        f"models={{'prm': {str(files.prm)!r}}}, outcome={OUTCOME!r}, step_tag={STEP_TAG!r})\n"
    )
    executor = openrlhf_agent.SingleTurnAgentExecutor(remote_rm_url=str(script))
    try:
        replies = asyncio.run(
            executor._fetch_rewards_via_func(samples.queries, samples.prompts, samples.labels)
        )
    finally:
        executor.reward_func.scorer.close()
    expected = reference(samples.prompts, samples.responses, samples.labels)
    rewards = torch.cat([reply["rewards"] for reply in replies])
    assert rewards.dtype == torch.float32 and rewards.shape == (len(samples.queries),)
    np.testing.assert_allclose(rewards.numpy(), expected.totals, atol=1e-6, rtol=0)
    scores = torch.cat([reply["scores"] for reply in replies])
    assert torch.equal(scores, rewards)
    outcome = torch.cat([reply["extra_logs"]["outcome"] for reply in replies])
    np.testing.assert_allclose(outcome.numpy(), expected.outcome, atol=1e-6)


# ----------------------------------------------------------------------------- the CLI
def _serve_command(files: Files, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "densereward.cli",
        "serve",
        str(files.recipe),
        "--tokenizer",
        str(files.tokenizer),
        "--outcome",
        OUTCOME,
        "--step-tag",
        STEP_TAG,
        "--port",
        "0",
        *extra,
    ]


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}


def _ready_port(process: subprocess.Popen[str], timeout: float = 60) -> int:
    """The port from the ``serving recipe ... on http://HOST:PORT/...`` line."""
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if selector.select(deadline - time.monotonic()):
            line = process.stdout.readline()
            assert line, f"serve exited early: {process.communicate()[1]}"
            if line.startswith("serving recipe"):
                return int(line.split("http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    raise AssertionError("serve did not say where it listens")


def test_cli_serve_answers_then_stops_cleanly_on_sigterm_and_sigint(
    files: Files, samples: Samples, reference: TextScorer
) -> None:
    started = {
        stop: subprocess.Popen(
            _serve_command(files, "--model", f"prm={files.prm}"),
            cwd=ROOT,
            env=_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for stop in (signal.SIGTERM, signal.SIGINT)
    }
    expected = reference(samples.prompts[:3], samples.responses[:3], samples.labels[:3])
    try:
        for stop, process in started.items():
            port = _ready_port(process)
            url = f"http://127.0.0.1:{port}"
            assert httpx.get(f"{url}/health", timeout=30).json()["recipe"] == "serve-test"
            reply = fetch(url, samples.queries[:3], samples.prompts[:3], samples.labels[:3])
            np.testing.assert_allclose(reply["rewards"], expected.totals, atol=1e-6, rtol=0)
            process.send_signal(stop)
            out, err = process.communicate(timeout=30)
            assert process.returncode == 0, err
            assert "Traceback" not in err
            assert out.rstrip().endswith("stopped")
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
                process.communicate()


def test_cli_serve_with_a_bad_model_path_exits_2_in_one_line(files: Files, tmp_path: Path) -> None:
    result = subprocess.run(
        _serve_command(files, "--model", f"prm={tmp_path / 'missing'}"),
        cwd=ROOT,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --model prm="), result.stderr
    assert "Traceback" not in result.stderr


def test_cli_serve_without_uvicorn_says_what_to_install(files: Files) -> None:
    # a package set to None in sys.modules cannot be imported: the core install's view
    program = (
        "import sys; sys.modules['uvicorn'] = None; sys.argv[0] = 'densereward'; "
        "from densereward.cli import main; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", program, "serve", str(files.recipe), "--tokenizer", "x"],
        cwd=ROOT,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: serve needs uvicorn: pip install 'densereward[serve]'"


def _readme_blocks(heading: str) -> list[str]:
    """The fenced code blocks of one README section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading) :]
    ends = [i for i in (section.find("\n## ", 1), section.find("\n### ", 1)) if i != -1]
    section = section[: min(ends)] if ends else section
    parts = section.split("```")
    return [part.split("\n", 1)[1] for part in parts[1::2]]


def test_the_readme_openrlhf_lines_run_verbatim(
    files: Files, samples: Samples, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's ``densereward serve`` line (plus ``--port 0``) and its two-line reward file,
    run in a folder holding the files they name: both give the in-process scorer's rewards."""
    serve_block, file_block = _readme_blocks("### OpenRLHF")
    for name, target in (
        ("prm.yaml", files.recipe),
        ("tokenizer", files.tokenizer),
        ("prm_dir", files.prm),
    ):
        (tmp_path / name).symlink_to(target)
    (tmp_path / "grader.py").write_text(f"from {OUTCOME.split(':')[0]} import grade\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    reference = TextScorer.from_files(
        "prm.yaml", "tokenizer", models={"prm": "prm_dir"}, outcome=OUTCOME
    )
    expected = reference(samples.prompts, samples.responses, samples.labels).totals

    (tmp_path / "reward.py").write_text(file_block)
    executor = openrlhf_agent.SingleTurnAgentExecutor(remote_rm_url="reward.py")
    try:
        replies = asyncio.run(
            executor._fetch_rewards_via_func(samples.queries, samples.prompts, samples.labels)
        )
    finally:
        executor.reward_func.scorer.close()
    local = torch.cat([reply["rewards"] for reply in replies]).numpy()
    np.testing.assert_allclose(local, expected, atol=1e-6, rtol=0)

    line = next(x for x in serve_block.splitlines() if x.startswith("densereward serve"))
    command = [sys.executable, "-m", "densereward.cli", *line.split()[1:], "--port", "0"]
    environment = {**_environment(), "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = _ready_port(process)
        reply = fetch(f"http://127.0.0.1:{port}", samples.queries, samples.prompts, samples.labels)
        np.testing.assert_allclose(reply["rewards"], expected, atol=1e-6, rtol=0)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert process.returncode == 0
