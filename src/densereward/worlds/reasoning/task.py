"""The reasoning world as GRPO's ``LanguageTask``: its prompts, graded rollouts, evaluation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from densereward.core.trajectories import Trajectories
from densereward.models.language import Rows, SampleCost
from densereward.worlds.reasoning.rollouts import rollout
from densereward.worlds.reasoning.tasks import Problem

if TYPE_CHECKING:  # transformers costs a second to import; annotations only
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class ReasoningTask:
    """Problems drawn by ``draw(n, update)``, graded exactly; held-out ``evaluation`` problems."""

    tokenizer: PreTrainedTokenizerBase
    draw: Callable[[int, int], list[Problem]]
    evaluation: Sequence[Problem]

    def prompts(self, n: int, update: int) -> list[Problem]:
        return self.draw(n, update)

    def rollout(
        self,
        policy: PreTrainedModel,
        prompts: Sequence[Problem],
        group_size: int,
        max_new_tokens: int,
        temperature: float,
        generator: torch.Generator,
    ) -> tuple[Trajectories, Rows, SampleCost]:
        return rollout(
            policy, self.tokenizer, prompts, group_size, max_new_tokens, temperature, generator
        )

    def evaluate(
        self, policy: PreTrainedModel, max_new_tokens: int, samples: int = 4
    ) -> dict[str, float]:
        """Held-out accuracy: ``eval_accuracy`` is the mean over ``samples`` responses per
        problem at temperature 1 (what the policy does; what GRPO optimises),
        ``eval_greedy_accuracy`` greedy; ``eval_process_accuracy``: sampled responses with no
        wrong step; ``eval_steps`` and ``eval_tokens``: mean steps and tokens per sampled
        response."""
        problems = self.evaluation
        greedy, _, _ = rollout(policy, self.tokenizer, problems, 1, max_new_tokens, temperature=0.0)
        sampled, sampled_rows, _ = rollout(
            policy,
            self.tokenizer,
            problems,
            samples,
            max_new_tokens,
            1.0,
            torch.Generator().manual_seed(0),
        )
        assert sampled.verdict is not None and greedy.verdict is not None
        return {
            "eval_accuracy": float(sampled.verdict.mean()),
            "eval_greedy_accuracy": float(greedy.verdict.mean()),
            "eval_process_accuracy": float((sampled.episode("first_error") == -1).double().mean()),
            "eval_steps": float(sampled.lengths.double().mean()),
            "eval_tokens": float(sampled_rows.response_mask.sum(1).double().mean()),
        }

    def batch_metrics(self, batch: Trajectories) -> dict[str, float]:
        """``process_accuracy``: responses of the batch with no wrong step."""
        return {"process_accuracy": float((batch.episode("first_error") == -1).double().mean())}
