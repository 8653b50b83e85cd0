"""Serve throughput: OpenRLHF-style requests through ``densereward serve`` against the scorer itself.

``python benchmarks/serve_throughput.py [--samples 256] [--clients 16] [--repeats 3]
[--layers 2] [--width 128]``

One fixture (the reasoning world's tokenizer, a process reward model over a random GPT-2 of
``--layers`` x ``--width``, a ``prm`` + ``step_grpo`` recipe, an exact-answer outcome), one set of
``--samples`` (prompt, response) pairs, scored five ways in interleaved repetitions so that load
on the machine hits all of them alike:

- ``in-process, batches of 64``: ``TextScorer`` called on 64 responses at a time (the baseline);
- ``in-process, one at a time``: one response per call;
- ``server, 1 per request, joined``: ``--clients`` concurrent clients each POSTing one sample per
  request, a new HTTP session per request, as OpenRLHF 0.11.2's ``SingleTurnAgentExecutor``
  does; the server joins waiting requests into one scorer call;
- ``server, 1 per request, serialised``: the same, each request its own scorer call (a lock);
- ``server, 64 per request``: one client, requests of 64 samples.

The server runs in its own process (uvicorn on loopback), the clients here. Tokens are the
scored sequences' tokens (prompt, response, end-of-sequence token). Prints the median of each
and its ratio to the in-process batched baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import torch

from densereward.adapters.text import TextScorer
from densereward.models.language import build_causal_lm
from densereward.models.prm import ProcessRewardModel
from densereward.worlds.reasoning.tasks import Difficulty, TaskSpec, sample_problems
from densereward.worlds.reasoning.tokenizer import build_tokenizer

RECIPE = """\
name: serve-benchmark
signals: {prm: {kind: prm, model: prm}}
estimator: {kind: step_grpo, process: prm}
"""
STEP_TAG = "ки"
OUTCOME = "serve_throughput:grade"  # benchmarks/ is on sys.path when run as a script
BATCH = 64


def grade(prompts: list[str], responses: list[str], labels: list[Any]) -> list[float]:
    """1 when the text after the last ``#`` is the label."""
    return [
        float(r.rpartition("#")[2] == str(label))
        for r, label in zip(responses, labels, strict=True)
    ]


def write_fixture(folder: Path, layers: int, width: int) -> None:
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(folder / "tokenizer")
    prm = ProcessRewardModel(build_causal_lm(tokenizer, layers=layers, width=width, heads=4))
    with torch.no_grad():
        prm.head.weight.normal_(generator=torch.Generator().manual_seed(0))
    prm.save_pretrained(folder / "prm")
    (folder / "recipe.yaml").write_text(RECIPE)


def load(folder: Path) -> TextScorer:
    return TextScorer.from_files(
        folder / "recipe.yaml",
        folder / "tokenizer",
        models={"prm": folder / "prm"},
        outcome=OUTCOME,
        step_tag=STEP_TAG,
    )


def run_server(folder: str, join: bool, port: Any) -> None:
    """The server process: uvicorn on a free loopback port, told back through ``port``."""
    import uvicorn

    from densereward.adapters.server import bind, make_app

    torch.set_num_threads(1)
    scorer = load(Path(folder))
    sock = bind("127.0.0.1", 0)
    app = make_app(scorer, max_request_bytes=1 << 24, max_batch=1024, join=join)
    port.send(sock.getsockname()[1])
    port.close()
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def samples(n: int, tokenizer: Any) -> tuple[list[str], list[str], list[str], list[str], int]:
    spec = TaskSpec(("arithmetic", "lists"), Difficulty(min_ops=1, max_ops=4))
    prompts, responses, labels, queries, tokens = [], [], [], [], 0
    for sample in sample_problems(spec, n, seed=0):
        prompt, response = sample.problem.prompt + "=?", sample.problem.response
        ids = (
            tokenizer(prompt, add_special_tokens=False)["input_ids"]
            + tokenizer(response, add_special_tokens=False)["input_ids"]
            + [tokenizer.eos_token_id]
        )
        tokens += len(ids)
        prompts.append(prompt)
        responses.append(response)
        labels.append(response.rpartition("#")[2])
        queries.append(tokenizer.decode(ids, skip_special_tokens=False))
    return prompts, responses, labels, queries, tokens


async def post(url: str, queries: list[str], prompts: list[str], labels: list[str]) -> None:
    """One request the way OpenRLHF 0.11.2 sends it: a new session, a 180 s timeout."""
    timeout = aiohttp.ClientTimeout(total=180)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        payload = {"query": queries, "prompts": prompts, "labels": labels}
        async with session.post(url, json=payload) as response:
            response.raise_for_status()
            reply = await response.json()
    assert len(reply["rewards"]) == len(queries)


async def clients(url: str, data: tuple[list[str], ...], size: int, count: int) -> None:
    """``count`` clients sharing the work, each sending requests of ``size`` samples in turn."""
    queries, prompts, labels = data
    starts = list(range(0, len(queries), size))

    async def client(index: int) -> None:
        for start in starts[index::count]:
            stop = start + size
            await post(url, queries[start:stop], prompts[start:stop], labels[start:stop])

    await asyncio.gather(*(client(i) for i in range(count)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--width", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the server process gets the other core

    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        write_fixture(folder, args.layers, args.width)
        scorer = load(folder)
        prompts, responses, labels, queries, tokens = samples(args.samples, scorer.tokenizer)
        context = multiprocessing.get_context("spawn")
        urls, servers = {}, []
        for join in (True, False):
            reader, writer = context.Pipe(duplex=False)
            server = context.Process(target=run_server, args=(name, join, writer), daemon=True)
            server.start()
            servers.append(server)
            if not reader.poll(120):
                raise SystemExit("the server did not start")
            urls[join] = f"http://127.0.0.1:{reader.recv()}/get_reward"
            reader.close()
        data = (queries, prompts, labels)

        def in_process(size: int) -> Callable[[], int]:
            def score() -> int:
                for start in range(0, len(prompts), size):
                    stop = start + size
                    scorer(prompts[start:stop], responses[start:stop], labels[start:stop])
                return -(-len(prompts) // size)

            return score

        def served(join: bool, size: int, count: int) -> Callable[[], int]:
            def score() -> int:
                asyncio.run(clients(urls[join], data, size, count))
                return -(-len(prompts) // size)

            return score

        ways = {
            f"in-process, batches of {BATCH}": in_process(BATCH),
            "in-process, one at a time": in_process(1),
            f"server, 1 per request, joined ({args.clients} clients)": served(
                True, 1, args.clients
            ),
            f"server, 1 per request, serialised ({args.clients} clients)": served(
                False, 1, args.clients
            ),
            f"server, {BATCH} per request (1 client)": served(True, BATCH, 1),
        }
        for score in ways.values():  # warm up: first forward passes, connections
            score()
        seconds: dict[str, list[float]] = {way: [] for way in ways}
        requests: dict[str, int] = {}
        for _ in range(args.repeats):
            for way, score in ways.items():
                start = time.perf_counter()
                requests[way] = score()
                seconds[way].append(time.perf_counter() - start)
        for server in servers:
            server.terminate()
            server.join(30)
        scorer.close()

    print(
        f"{args.samples} samples, {tokens} tokens, PRM {args.layers}x{args.width}, "
        f"median of {args.repeats}"
    )
    baseline = statistics.median(seconds[f"in-process, batches of {BATCH}"])
    print(f"{'':58s} {'requests/s':>11s} {'samples/s':>10s} {'tokens/s':>10s} {'ratio':>6s}")
    for way, times in seconds.items():
        median = statistics.median(times)
        print(
            f"{way:58s} {requests[way] / median:11.1f} {args.samples / median:10.1f} "
            f"{tokens / median:10.0f} {baseline / median:6.2f}"
        )


if __name__ == "__main__":
    main()
