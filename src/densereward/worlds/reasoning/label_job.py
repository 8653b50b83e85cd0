"""The reasoning world's labeling job: Monte-Carlo step labels (and PRM scores) of a file of
rollouts, run by the resumable engine of ``labeling.jobs``.

A rollouts file is JSON lines, one rollout each::

    {"id": "7-1",
     "problem": {"family": "arithmetic", "prompt": "(4-4)*3",
                 "steps": ["4-4=0", "0*3=0"], "answer": "0"},
     "response": "4-4=0ки0*3=0ки#0"}

``id`` (a string or an integer, unique in the file) names the rollout in the output; the
problem is serialised whole, so the exact grader judges the prover's completions; other keys are
ignored. ``write_rollouts`` writes this format and ``label --example`` makes one from the SFT
policy.

The output has one row per step span of each response, as the world lays a response out for its
reward models (``ReasoningSetup.mc_labels``): the tagged steps, then the tail (answer and EOS).
Columns: ``rollout`` (its id), ``row`` (its line order in the file), ``step``, ``step_text``,
``label_source`` (``monte_carlo`` for a step the prover completed, ``after_answer`` for a tag
written after the answer mark, which gets 0, and ``outcome`` for the tail, which gets the exact
verdict), ``soft`` (Math-Shepherd's soft label: the fraction of ``N`` completions of the prefix
that reach the reference answer), ``hard`` (``soft > 0``), ``outcome`` (the rollout's exact
verdict) and, with a PRM, ``prm`` (its score at the span's last token).

Models are files: ``save_model`` writes a policy or PRM with the world parameters that rebuild
its architecture; a run folder's ``checkpoints/<method>-seed<k>.pt`` also works as the prover
(its world is read from the folder's ``config.yaml``), so a GRPO-trained policy can label.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pyarrow as pa
import torch
import yaml

from densereward.core.errors import ConfigError, ValidationError
from densereward.core.registry import build_config
from densereward.io.atomic import atomic_path
from densereward.io.jsonl import iter_json_lines, write_records
from densereward.labeling.jobs import LabeledShard, LabelJob, Shard
from densereward.labeling.mc import Prover, monte_carlo_labels
from densereward.models.language import (
    build_causal_lm,
    encode_rows,
    response_step_spans,
    span_end_positions,
)
from densereward.models.prm import ProcessRewardModel
from densereward.worlds.reasoning.rollouts import policy_prompt, rollout
from densereward.worlds.reasoning.tasks import (
    FAMILIES,
    STEP_TAG,
    Problem,
    grade,
    parse_response,
    sample_problems,
    tag_aligned,
)
from densereward.worlds.reasoning.tokenizer import build_tokenizer
from densereward.worlds.reasoning.world import ReasoningSetup, ReasoningWorld

if TYPE_CHECKING:  # transformers costs a second to import; annotations only
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

MODEL_FORMAT = "densereward-reasoning-model/1"
LABELS = "reasoning-monte-carlo/1"
"""Names what the job's labels are; part of its spec, so a change of meaning is a new job."""
LABEL_SCHEMA = pa.schema(
    [
        ("rollout", pa.string()),
        ("row", pa.int64()),
        ("step", pa.int32()),
        ("step_text", pa.string()),
        ("label_source", pa.string()),
        ("soft", pa.float64()),
        ("hard", pa.float64()),
        ("outcome", pa.float64()),
    ]
)
"""The columns of every shard (``prm``, float64, follows when a PRM scores)."""
MAX_POSITIONS = 256
"""The positions ``ReasoningSetup`` gives its policy (prompt, response and completion must fit)."""


# --------------------------------------------------------------------------- rollouts files


@dataclass(frozen=True)
class Rollout:
    """One response to a problem, with the line it was read from (0 when not from a file)."""

    id: str
    problem: Problem
    response: str
    line: int = 0


def rollout_record(item: Rollout) -> dict[str, Any]:
    problem = item.problem
    return {
        "id": item.id,
        "problem": {
            "family": problem.family,
            "prompt": problem.prompt,
            "steps": list(problem.steps),
            "answer": problem.answer,
        },
        "response": item.response,
    }


def write_rollouts(rollouts: Sequence[Rollout], path: str | Path) -> None:
    """The rollouts as a JSON-lines file ``read_rollouts`` reads back, written atomically."""
    write_records([rollout_record(r) for r in rollouts], path)


def read_rollouts(path: str | Path) -> list[Rollout]:
    """Every rollout of a file, validated: a bad line is a ``ValidationError`` naming the file,
    the line and the field."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ValidationError("rollouts", "file not found", source=source)
    out: list[Rollout] = []
    seen: dict[str, int] = {}
    for number, record in iter_json_lines(path):

        def fail(field: str, problem: str, n: int = number) -> ValidationError:
            return ValidationError(field, problem, line=n, source=source)

        identifier = record.get("id")
        if isinstance(identifier, bool) or not isinstance(identifier, str | int):
            raise fail("id", f"expected a string or an integer, got {_show(identifier)}")
        identifier = str(identifier)
        if not identifier:
            raise fail("id", "is empty")
        if identifier in seen:
            raise fail("id", f"{identifier!r} is also the id of line {seen[identifier]}")
        seen[identifier] = number
        problem = record.get("problem")
        if not isinstance(problem, dict):
            raise fail("problem", f"expected an object, got {_show(problem)}")
        for key in ("family", "prompt", "answer"):
            if not isinstance(problem.get(key), str):
                raise fail(f"problem.{key}", f"expected a string, got {_show(problem.get(key))}")
        if problem["family"] not in FAMILIES:
            known = ", ".join(sorted(FAMILIES))
            raise fail("problem.family", f"unknown {problem['family']!r} (known: {known})")
        steps = problem.get("steps")
        if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
            raise fail("problem.steps", f"expected a list of strings, got {_show(steps)}")
        response = record.get("response")
        if not isinstance(response, str):
            raise fail("response", f"expected a string, got {_show(response)}")
        out.append(
            Rollout(
                identifier,
                Problem(problem["family"], problem["prompt"], tuple(steps), problem["answer"]),
                response,
                number,
            )
        )
    if not out:
        raise ValidationError("rollouts", "the file holds no rollouts", source=source)
    return out


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_lengths(
    rollouts: Sequence[Rollout],
    tokenizer: PreTrainedTokenizerBase,
    max_new_tokens: int,
    source: str,
) -> None:
    """Every prompt and response, plus the prover's completion, fits the model's positions."""
    for item in rollouts:
        text = (tokenizer.bos_token or "") + policy_prompt(item.problem) + item.response
        tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1  # and EOS
        if tokens + max_new_tokens > MAX_POSITIONS:
            raise ValidationError(
                "response",
                f"{tokens} tokens with its prompt, plus {max_new_tokens} to complete, exceed "
                f"the model's {MAX_POSITIONS} positions",
                line=item.line,
                source=source,
            )


# --------------------------------------------------------------------------- model files


def save_model(
    path: str | Path, world: ReasoningWorld, model: torch.nn.Module, kind: str = "policy"
) -> None:
    """A policy (``kind="policy"``) or a PRM (``"prm"``) with the world parameters that rebuild
    its architecture, written atomically."""
    document = {
        "format": MODEL_FORMAT,
        "kind": kind,
        "world": dataclasses.asdict(world),
        "state_dict": model.state_dict(),
    }
    with atomic_path(path) as temporary:
        torch.save(document, temporary)


def load_model(path: str | Path, kind: str, option: str) -> tuple[ReasoningWorld, torch.nn.Module]:
    """The world and the model of a file ``save_model`` wrote, or (a policy) of a run folder's
    checkpoint; ``option`` is what the user named the file with, for errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(option, f"{path}: file not found")
    try:
        document = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ConfigError(option, f"{path}: not a model file ({type(error).__name__})") from None
    if isinstance(document, dict) and document.get("format") == MODEL_FORMAT:
        if document.get("kind") != kind:
            raise ConfigError(option, f"{path} holds a {document.get('kind')}, not a {kind}")
        world = build_config(ReasoningWorld, document["world"], f"{option} world", "world")
        state = document["state_dict"]
    elif kind == "policy" and isinstance(document, dict):
        world = _run_folder_world(path, option)
        state = document
    else:
        raise ConfigError(option, f"{path}: not a {kind} file written by densereward")
    backbone = build_causal_lm(
        build_tokenizer(), world.architecture, world.layers, world.width, world.heads, MAX_POSITIONS
    )
    model: torch.nn.Module = backbone if kind == "policy" else ProcessRewardModel(backbone)
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError) as error:
        first = str(error).splitlines()[0]
        raise ConfigError(option, f"{path}: weights do not fit its world ({first})") from None
    return world, model.eval()


def _run_folder_world(path: Path, option: str) -> ReasoningWorld:
    """The world of a run folder's checkpoint (``<folder>/checkpoints/<name>.pt``)."""
    config = path.parent.parent / "config.yaml"
    if not config.is_file():
        raise ConfigError(
            option,
            f"{path} holds bare weights and no {config} tells their world: give a model file "
            "(label --example writes one) or a run folder's checkpoint",
        )
    world = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("world")
    if not isinstance(world, dict) or world.get("kind") != "reasoning":
        raise ConfigError(option, f"{config} is not a run of the reasoning world")
    parameters = {k: v for k, v in world.items() if k != "kind"}
    return build_config(ReasoningWorld, parameters, f"{config} world", "world")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- labels


def label_steps(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rollouts: Sequence[Rollout],
    rows: Sequence[int],
    rollouts_per_step: int,
    max_new_tokens: int,
    seed: int,
    prm: ProcessRewardModel | None = None,
) -> LabeledShard:
    """The label table of ``rollouts`` (input rows ``rows``): MC values of every tagged step
    from ``rollouts_per_step`` completions by ``policy`` (all prefixes in one batch, sharing
    their KV caches), the exact verdict for the tail, and PRM scores if ``prm`` is given."""
    distinct = list(dict.fromkeys(r.problem for r in rollouts))
    position = {p: i for i, p in enumerate(distinct)}
    prover = Prover(
        policy,
        tokenizer,
        [policy_prompt(p) for p in distinct],
        lambda index, text: grade(distinct[index], text).correct,
        max_new_tokens,
    )
    solutions = [
        list(parse_response(r.response)[0])[: r.response.count(STEP_TAG)] for r in rollouts
    ]
    mc = monte_carlo_labels(
        prover,
        [position[r.problem] for r in rollouts],
        solutions,
        STEP_TAG,
        rollouts_per_step,
        seed=seed,
        include_start=False,
    )
    columns: dict[str, list[Any]] = {name: [] for name in LABEL_SCHEMA.names}
    for item, row, values in zip(rollouts, rows, mc.soft, strict=True):
        texts = item.response.split(STEP_TAG)  # the tagged steps' text, then the tail
        outcome = float(grade(item.problem, item.response).correct)
        soft = [*tag_aligned(item.response, values), outcome]
        tags = len(texts) - 1
        sources = ["monte_carlo"] * len(values) + ["after_answer"] * (tags - len(values))
        columns["rollout"] += [item.id] * len(texts)
        columns["row"] += [row] * len(texts)
        columns["step"] += list(range(len(texts)))
        columns["step_text"] += texts
        columns["label_source"] += [*sources, "outcome"]
        columns["soft"] += soft
        columns["hard"] += [float(v > 0) for v in soft]
        columns["outcome"] += [outcome] * len(texts)
    table = pa.table(columns, schema=LABEL_SCHEMA)
    if prm is not None:
        table = table.append_column("prm", pa.array(prm_scores(prm, tokenizer, rollouts)))
    return LabeledShard(table, mc.generated_tokens)


def prm_scores(
    prm: ProcessRewardModel, tokenizer: PreTrainedTokenizerBase, rollouts: Sequence[Rollout]
) -> list[float]:
    """The PRM's score at the last token of every step span (one forward pass per chunk)."""
    rows = encode_rows(
        tokenizer, [policy_prompt(r.problem) for r in rollouts], [r.response for r in rollouts]
    )
    tag = int(tokenizer.convert_tokens_to_ids(STEP_TAG))  # type: ignore[arg-type]
    lengths, spans = response_step_spans(rows, tag)
    for item, length in zip(rollouts, lengths, strict=True):
        if length != item.response.count(STEP_TAG) + 1:
            raise ValidationError(
                "response",
                f"rollout {item.id!r}: its step tags do not tokenize one token each",
                line=item.line or None,
            )
    positions = span_end_positions(rows.prompt_width, lengths, spans)
    return [float(v) for v in prm.score(rows, positions).double()]


# --------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class ReasoningLabeler:
    """What a worker needs to build its labeler: file paths (absolute: Ray workers start
    elsewhere; on a cluster every node must see them) and the label parameters. Pickles small;
    the worker loads the models and reads the rollouts once."""

    rollouts: str
    prover: str
    prm: str | None
    rollouts_per_step: int

    def __call__(self) -> RolloutLabeler:
        world, policy = load_model(self.prover, "policy", "--prover")
        prm = load_model(self.prm, "prm", "--prm")[1] if self.prm else None
        return RolloutLabeler(
            build_tokenizer(),
            policy,  # type: ignore[arg-type]
            cast(ProcessRewardModel | None, prm),
            read_rollouts(self.rollouts),
            self.rollouts_per_step,
            world.max_new_tokens,
        )


@dataclass(frozen=True)
class RolloutLabeler:
    """A worker's loaded state; labels the shard's slice of the rollouts with its seed."""

    tokenizer: PreTrainedTokenizerBase
    policy: PreTrainedModel
    prm: ProcessRewardModel | None
    rollouts: list[Rollout]
    rollouts_per_step: int
    max_new_tokens: int

    def __call__(self, shard: Shard) -> LabeledShard:
        return label_steps(
            self.policy,
            self.tokenizer,
            self.rollouts[shard.start : shard.stop],
            range(shard.start, shard.stop),
            self.rollouts_per_step,
            self.max_new_tokens,
            shard.seed,
            self.prm,
        )


def check_rollouts_per_step(rollouts_per_step: int) -> None:
    if rollouts_per_step < 1:
        raise ConfigError("--rollouts-per-step", f"must be at least 1, got {rollouts_per_step}")


def label_job(
    rollouts: str | Path,
    prover: str | Path,
    prm: str | Path | None = None,
    rollouts_per_step: int = 8,
    shard_size: int = 8,
    seed: int = 0,
) -> LabelJob:
    """The job over a rollouts file, validated here (before any worker starts): the rollouts,
    the model files, and that every rollout fits the prover. Its spec holds the SHA-256 of the
    rollouts and models and every label parameter, so rerunning with another input or setting
    into the same folder is refused rather than mixed."""
    check_rollouts_per_step(rollouts_per_step)
    rollouts, prover = Path(rollouts).resolve(), Path(prover).resolve()
    items = read_rollouts(rollouts)
    world, _ = load_model(prover, "policy", "--prover")
    if prm is not None:
        prm = Path(prm).resolve()
        load_model(prm, "prm", "--prm")
    check_lengths(items, build_tokenizer(), world.max_new_tokens, str(rollouts))
    spec = {
        "labels": LABELS,
        "rollouts": file_sha256(rollouts),
        "prover": file_sha256(prover),
        "prm": file_sha256(prm) if prm is not None else None,
        "rollouts_per_step": rollouts_per_step,
        "max_new_tokens": world.max_new_tokens,
    }
    labeler = ReasoningLabeler(
        str(rollouts), str(prover), str(prm) if prm else None, rollouts_per_step
    )
    return LabelJob(spec, len(items), labeler, shard_size, seed)


# --------------------------------------------------------------------------- the example

EXAMPLE_WORLD = ReasoningWorld(
    families=("arithmetic",),
    min_ops=2,
    max_ops=2,
    max_operand=4,
    layers=2,
    width=64,
    heads=2,
    sft_examples=12_000,
    sft_epochs=1,
    sft_learning_rate=3e-3,
    eval_problems=1,
    label_problems=128,
    prm_epochs=12,
    max_new_tokens=32,
)
"""A prover that SFT makes in seconds and that is right about a third of the time, so MC labels
are neither all 0 nor all 1."""
EXAMPLE_PROBLEMS, EXAMPLE_SAMPLES = 32, 2
EXAMPLE_SEED = 50_000
"""The example's problems: a stream none of the world's (SFT, PRM data, RL, evaluation) uses."""


@dataclass(frozen=True)
class ExampleInputs:
    rollouts: Path
    prover: Path
    prm: Path


def write_example(folder: str | Path) -> tuple[ExampleInputs, float]:
    """The example's inputs in ``folder``: the tiny world's SFT policy (the prover), a PRM
    trained on its exact labels, and 2 sampled responses to each of 32 fresh problems. Reused
    if all three files are there (the rollouts are written last, so their presence means the
    others are complete). Returns the paths and the seconds spent making them."""
    folder = Path(folder)
    inputs = ExampleInputs(folder / "rollouts.jsonl", folder / "prover.pt", folder / "prm.pt")
    if all(p.is_file() for p in (inputs.rollouts, inputs.prover, inputs.prm)):
        return inputs, 0.0
    for stray in folder.glob(".*.tmp"):  # a killed run's half-written files
        stray.unlink()
    started = time.perf_counter()
    # One thread: a width-64 model gains nothing from more, and on a busy machine OpenMP's
    # barriers wait for descheduled threads (SFT took 20x longer with 2 threads on 2 busy cores).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        setup = ReasoningSetup.build(EXAMPLE_WORLD, seed=0)
        save_model(inputs.prover, EXAMPLE_WORLD, setup.policy, "policy")
        save_model(inputs.prm, EXAMPLE_WORLD, setup.models(["prm_exact"])["prm_exact"], "prm")
        problems = [
            s.problem for s in sample_problems(EXAMPLE_WORLD.spec, EXAMPLE_PROBLEMS, EXAMPLE_SEED)
        ]
        batch, _, _ = rollout(
            setup.policy,
            setup.tokenizer,
            problems,
            EXAMPLE_SAMPLES,
            EXAMPLE_WORLD.max_new_tokens,
            generator=torch.Generator().manual_seed(EXAMPLE_SEED),
        )
    finally:
        torch.set_num_threads(threads)
    groups = batch.episode("group").tolist()
    write_rollouts(
        [
            Rollout(f"{g}-{i % EXAMPLE_SAMPLES}", problems[g], response)
            for i, (g, response) in enumerate(zip(groups, batch.text["response"], strict=True))
        ],
        inputs.rollouts,
    )
    return inputs, time.perf_counter() - started


__all__ = [
    "EXAMPLE_WORLD",
    "ExampleInputs",
    "ReasoningLabeler",
    "Rollout",
    "RolloutLabeler",
    "label_job",
    "label_steps",
    "load_model",
    "prm_scores",
    "read_rollouts",
    "save_model",
    "write_example",
    "write_rollouts",
]
