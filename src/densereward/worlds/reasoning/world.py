"""The reasoning world as a ``World``: step-verifiable tasks, a small causal LM, GRPO.

``ReasoningWorld`` (registered as ``reasoning``) holds the parameters: task mix, policy size, the
SFT that makes the starting policy, the reward models' data. ``setup(seed)`` builds a
``ReasoningSetup`` — tokenizer, SFT policy, held-out problems, and the reward models its process
signals need (PRMs on exact or Monte-Carlo labels, a prover-value model for PAV), trained once on
first request — which every method of that seed starts from, so a seed is one unit of work.

Everything is built from the config and the seed, on CPU, in minutes; nothing is downloaded.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import numpy as np
import torch
from annotated_types import Ge

from densereward.core.components import (
    Axis,
    Needs,
    Plot,
    RunResults,
    SignalContext,
    Trained,
    World,
)
from densereward.core.errors import ConfigError
from densereward.core.parameters import Count, Positive, Unit
from densereward.core.registry import register
from densereward.labeling.mc import Prover, monte_carlo_labels
from densereward.models.language import (
    build_causal_lm,
    encode_rows,
    response_step_spans,
    span_end_positions,
    supervised_fine_tune,
)
from densereward.models.prm import ProcessRewardModel, flatten_labels, train_prm
from densereward.pipeline import Recipe
from densereward.trainers.grpo import GRPOConfig, GRPOResult, train_grpo
from densereward.worlds.reasoning.commands import export_tasks, label_rollout_steps
from densereward.worlds.reasoning.report import reasoning_report
from densereward.worlds.reasoning.rollouts import policy_prompt, rollout
from densereward.worlds.reasoning.task import ReasoningTask
from densereward.worlds.reasoning.tasks import (
    CORRUPTIONS,
    STEP_TAG,
    TEXT_FORMAT,
    Difficulty,
    Problem,
    Sample,
    TaskSpec,
    corrupt,
    grade,
    parse_response,
    render_response,
    sample_problems,
    span_labels,
    tag_aligned,
)
from densereward.worlds.reasoning.tokenizer import build_tokenizer

if TYPE_CHECKING:  # transformers costs a second to import; annotations only
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

WORLD_MODELS = ("prm_exact", "prm_mc", "prm_mc_soft", "prover_value")
"""Reward models the world trains on request (``ReasoningSetup.models``)."""
LIVE_MODELS = ("policy", "reference")
"""Models the GRPO trainer itself hands the signals: the live policy and its frozen start."""

# Problem streams never overlap: SFT, reward-model data, RL prompts and evaluation draw from
# disjoint seed ranges.
SFT_SEED, LABEL_SEED, TRAIN_SEED, EVAL_SEED = 10_000, 20_000, 1_000_000, 99_999


@register(
    "world", "reasoning", paper="step-verifiable tasks; GRPO (DeepSeekMath, Shao et al. 2024)"
)
@dataclass(frozen=True)
class ReasoningWorld(World):
    """Step-verifiable reasoning tasks, a small causal LM made by SFT, trained with GRPO."""

    families: tuple[str, ...] = ("arithmetic",)
    """task families to draw problems from (arithmetic, equation, lists, tool_calls, programs)"""
    min_ops: Count = 2
    """fewest operations (steps) per problem"""
    max_ops: Count = 3
    """most operations (steps) per problem"""
    max_operand: Annotated[int, Ge(2)] = 9
    """largest operand"""
    architecture: str = "gpt2"
    """the policy's causal LM: gpt2 or llama (built from a config, randomly initialised)"""
    layers: Count = 3
    """transformer layers of the policy"""
    width: Count = 128
    """hidden size of the policy"""
    heads: Count = 4
    """attention heads of the policy"""
    sft_examples: Count = 16_000
    """demonstrations the starting policy is fine-tuned on"""
    sft_epochs: Count = 2
    """passes over the demonstrations"""
    sft_learning_rate: Positive = 2e-3
    """AdamW's learning rate for SFT"""
    sft_noise: Unit = 0.0
    """Fraction of SFT demonstrations that carry one controlled corruption (``sft_corruptions``):
    imperfect demonstrations, as human or distilled data are; the policy learns to make those
    mistakes at about that rate, and RL has a systematic error to remove."""
    sft_corruptions: tuple[str, ...] = ("arithmetic", "operand", "skip", "miracle")
    """corruption kinds drawn for the noisy demonstrations"""
    eval_problems: Count = 200
    """held-out problems of every evaluation"""
    label_problems: Count = 256
    """Problems whose sampled solutions train the reward models (4 solutions each)."""
    label_rollouts: Count = 8
    """Monte-Carlo completions per step prefix."""
    prm_epochs: Count = 4
    """passes over the reward models' training data"""
    max_new_tokens: Count = 40
    """longest response; the trainer's must agree (the reward models learn on these samples)"""

    trainers: ClassVar = {"grpo": GRPOConfig}
    progress: ClassVar = Axis("samples", "training samples")
    plots: ClassVar = (
        Plot("eval_accuracy", "held-out accuracy", "accuracy.png", bounded=True),
        Plot("response_tokens", "response tokens", "length.png"),
    )
    trains_on_selection: ClassVar = True
    shares_setup: ClassVar = True
    commands: ClassVar = {"tasks": export_tasks, "label": label_rollout_steps}

    def __post_init__(self) -> None:
        if not 0.0 <= self.sft_noise <= 1.0:
            raise ConfigError("sft_noise", f"must be in [0, 1], got {self.sft_noise}")
        unknown = [kind for kind in self.sft_corruptions if kind not in CORRUPTIONS]
        if unknown or not self.sft_corruptions:
            raise ConfigError(
                "sft_corruptions",
                f"unknown corruption {unknown[0]!r}; known: {', '.join(CORRUPTIONS)}"
                if unknown
                else "name at least one corruption",
            )
        try:
            self.spec  # noqa: B018 - validates the families and difficulty
        except KeyError as error:
            raise ConfigError("families", str(error.args[0])) from None

    @property
    def spec(self) -> TaskSpec:
        return TaskSpec(
            tuple(self.families),
            Difficulty(self.min_ops, self.max_ops, self.max_operand),
        )

    def label(self) -> str:
        return f"reasoning ({', '.join(self.families)}, {self.architecture})"

    def offers(self) -> Needs:
        return Needs(models=(*LIVE_MODELS, *WORLD_MODELS), text=True)

    def trainer_defaults(self) -> dict[str, Any]:
        return {"max_new_tokens": self.max_new_tokens}

    def check(self, trainer: GRPOConfig) -> None:
        # One response length: the reward models learn on the world's samples, so RL samples
        # of another length would be scored off their training distribution.
        if trainer.max_new_tokens != self.max_new_tokens:
            raise ConfigError(
                "max_new_tokens",
                f"{trainer.max_new_tokens} differs from world.max_new_tokens "
                f"({self.max_new_tokens}); set the response length once, in the world",
            )

    def budget(self, trainer: GRPOConfig) -> int:
        return trainer.budget

    def setup(self, seed: int) -> ReasoningSetup:
        return ReasoningSetup.build(self, seed)

    def train(
        self,
        setup: ReasoningSetup,
        trainer: GRPOConfig,
        recipe: Recipe,
        progress: Callable[[int], None],
    ) -> Trained:
        result = train_from_sft(setup, trainer, recipe, lambda row: progress(int(row["samples"])))
        final = result.metrics[-1]  # the trained policy's held-out evaluation
        evaluation = {key: value for key, value in final.items() if key.startswith("eval_")}
        return Trained(result.metrics, result.policy, evaluation)

    def evaluate(self, setup: ReasoningSetup, policy: Any) -> dict[str, float]:
        return setup.task().evaluate(policy, self.max_new_tokens)

    def report(self, results: RunResults) -> str:
        return reasoning_report(self.label(), results)


def demonstrations(
    data: Sequence[Sample], noise: float, kinds: Sequence[str], seed: int
) -> list[str]:
    """Canonical solutions, except a ``noise`` fraction (chosen at random) that carry one
    corruption of a kind drawn uniformly from ``kinds``."""
    rng = np.random.default_rng(seed)
    noisy = rng.random(len(data)) < noise
    out = []
    for sample, corrupted in zip(data, noisy, strict=True):
        if corrupted:
            bad = corrupt(sample, str(rng.choice(list(kinds))), rng)
            out.append(render_response(bad.steps, bad.answer))
        else:
            out.append(sample.problem.response)
    return out


def exact_step_labels(problems: Sequence[Problem], responses: Sequence[str]) -> list[list[float]]:
    """Exact labels for every step span of each response as ``encode_rows`` lays it out (the
    tagged steps, then the tail: answer and EOS), the same as ``graded_batch``'s ``label``
    column for the same text (``span_labels``)."""
    return [
        span_labels(grade(problem, response), response, response.count(STEP_TAG) + 1)
        for problem, response in zip(problems, responses, strict=True)
    ]


@dataclass
class ReasoningSetup:
    """One seed of the world, built: ``models(names)`` trains (once) and returns the reward
    models asked for; ``task()`` is what GRPO trains on."""

    config: ReasoningWorld
    seed: int
    tokenizer: PreTrainedTokenizerBase
    policy: PreTrainedModel
    eval_set: list[Problem]
    sft_seconds: float
    cache: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def build(config: ReasoningWorld, seed: int = 0) -> ReasoningSetup:
        start = time.perf_counter()
        tokenizer = build_tokenizer(families=config.families)
        policy = build_causal_lm(
            tokenizer, config.architecture, config.layers, config.width, config.heads, 256, seed
        )
        data = sample_problems(config.spec, config.sft_examples, SFT_SEED + seed)
        supervised_fine_tune(
            policy,
            tokenizer,
            [policy_prompt(s.problem) for s in data],
            demonstrations(data, config.sft_noise, config.sft_corruptions, SFT_SEED + seed),
            epochs=config.sft_epochs,
            learning_rate=config.sft_learning_rate,
            seed=seed,
        )
        eval_set = [
            s.problem for s in sample_problems(config.spec, config.eval_problems, EVAL_SEED)
        ]
        return ReasoningSetup(
            config, seed, tokenizer, policy, eval_set, time.perf_counter() - start
        )

    def task(self) -> ReasoningTask:
        return ReasoningTask(self.tokenizer, self.train_problems, self.eval_set)

    def context(self, models: dict[str, Any]) -> SignalContext:
        """What the world hands its signals: the seed, the tokenizer, the text format and the
        trained reward models asked for (the trainer adds ``policy`` and ``reference``)."""
        return SignalContext(
            self.seed, models=models, tokenizer=self.tokenizer, text_format=TEXT_FORMAT
        )

    def train_problems(self, n: int, update: int) -> list[Problem]:
        """The RL prompts of one update (fresh problems every update)."""
        return [
            s.problem
            for s in sample_problems(self.config.spec, n, TRAIN_SEED + 7919 * self.seed + update)
        ]

    def label_set(self) -> tuple[list[Problem], list[str]]:
        """Solutions sampled from the SFT policy (4 per problem): the reward models' inputs."""
        if "label_set" not in self.cache:
            problems = [
                s.problem
                for s in sample_problems(
                    self.config.spec, self.config.label_problems, LABEL_SEED + self.seed
                )
            ]
            batch, _, _ = rollout(
                self.policy,
                self.tokenizer,
                problems,
                4,
                self.config.max_new_tokens,
                generator=torch.Generator().manual_seed(self.seed),
            )
            owners = [problems[g] for g in batch.episode("group").tolist()]
            self.cache["label_set"] = (owners, list(batch.text["response"]))
        problems_out, responses = self.cache["label_set"]
        return problems_out, responses

    def prover(self, problems: Sequence[Problem]) -> Prover:
        policy = self.policy
        prompts = [policy_prompt(p) for p in problems]
        return Prover(
            policy,
            self.tokenizer,
            prompts,
            lambda index, text: grade(problems[index], text).correct,
            self.config.max_new_tokens,
        )

    def _train(
        self,
        name: str,
        problems: list[Problem],
        responses: list[str],
        labels: list[list[float]],
        start_values: list[float] | None,
    ) -> ProcessRewardModel:
        """A PRM on the policy's backbone, supervised at every step end (and at the prompt's last
        token when ``start_values`` are given: the prover-value model needs ``V(s_0)``)."""
        started = time.perf_counter()
        prompts = [policy_prompt(p) for p in problems]
        rows = encode_rows(self.tokenizer, prompts, responses)
        lengths, spans = response_step_spans(
            rows,
            int(self.tokenizer.convert_tokens_to_ids(STEP_TAG)),  # type: ignore[arg-type]
        )
        positions = span_end_positions(rows.prompt_width, lengths, spans)
        flat = flatten_labels(labels)
        if len(flat) != len(positions):
            raise AssertionError(f"{name}: {len(flat)} labels for {len(positions)} steps")
        if start_values is not None:
            starts = torch.stack(
                [torch.arange(len(prompts)), torch.full((len(prompts),), rows.prompt_width - 1)], 1
            )
            positions = torch.cat([starts, positions])
            flat = torch.cat([torch.tensor(start_values, dtype=torch.float32), flat])
        model = ProcessRewardModel(self.policy)
        train_prm(
            model,
            rows,
            positions,
            flat,
            epochs=self.config.prm_epochs,
            seed=self.seed,
        )
        self.timings[name] = time.perf_counter() - started
        return model

    def models(self, names: Sequence[str]) -> dict[str, Any]:
        """Reward models by name: ``prm_exact``, ``prm_mc`` (hard MC labels), ``prm_mc_soft``,
        ``prover_value`` (soft MC values with ``V(s_0)``, for PAV)."""
        out = {}
        for name in names:
            if name in self.cache:
                out[name] = self.cache[name]
                continue
            problems, responses = self.label_set()
            if name == "prm_exact":
                labels = exact_step_labels(problems, responses)
                model = self._train(name, problems, responses, labels, None)
            elif name in ("prm_mc", "prm_mc_soft", "prover_value"):
                mc = self.mc_labels(problems, responses)
                soft = mc.soft
                labels = mc.hard if name == "prm_mc" else soft
                model = self._train(
                    name, problems, responses, labels, mc.start if name == "prover_value" else None
                )
            else:
                raise ConfigError(
                    "model",
                    f"{name!r} is not one the reasoning world trains ({', '.join(WORLD_MODELS)})",
                )
            self.cache[name] = model
            out[name] = model
        return out

    def mc_labels(self, problems: list[Problem], responses: list[str]) -> Any:
        """MC values after every tagged step (the tail gets the exact outcome: no rollouts)."""
        if "mc" in self.cache:
            return self.cache["mc"]
        started = time.perf_counter()
        distinct = list(dict.fromkeys(problems))
        position = {p: i for i, p in enumerate(distinct)}
        index = [position[p] for p in problems]
        solutions = [list(parse_response(r)[0])[: r.count(STEP_TAG)] for r in responses]
        prover = self.prover(distinct)
        labels = monte_carlo_labels(
            prover, index, solutions, STEP_TAG, self.config.label_rollouts, seed=self.seed
        )
        soft = []
        for problem, response, row in zip(problems, responses, labels.soft, strict=True):
            soft.append([*tag_aligned(response, row), float(grade(problem, response).correct)])
        result = type(labels)(soft, labels.start, labels.generated_tokens)
        self.cache["mc"] = result
        self.timings["mc_labels"] = time.perf_counter() - started
        return result


def train_from_sft(
    setup: ReasoningSetup,
    config: GRPOConfig,
    recipe: Recipe,
    progress: Callable[[dict[str, float]], None] | None = None,
) -> GRPOResult:
    """GRPO with ``recipe`` on a copy of the seed's SFT policy, with the reward models its
    signals need (trained once per setup)."""
    names = [name for name in recipe.needs().models if name not in LIVE_MODELS]
    return train_grpo(
        config,
        copy.deepcopy(setup.policy),
        setup.task(),
        recipe,
        setup.context(setup.models(names)),
        progress,
    )


__all__ = ["ReasoningSetup", "ReasoningWorld", "train_from_sft"]
