"""A third world, written the way docs/architecture.md says (one module here; a package under
``densereward/worlds`` in the library): a K-armed Gaussian bandit whose trainer is REINFORCE on
the advantages of the method's pipeline. Nothing in ``runs``, ``cli`` or ``trainers`` knows it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from densereward.core.components import Axis, Plot, RunResults, SignalContext, Trained, World
from densereward.core.errors import ConfigError
from densereward.core.registry import register
from densereward.core.trajectories import Trajectories
from densereward.pipeline import Pipeline, Recipe


@dataclass(frozen=True)
class ReinforceConfig:
    length: ClassVar[str] = "updates"
    estimator: ClassVar[dict] = {"kind": "grpo"}

    updates: int = 30
    """policy-gradient steps"""
    pulls: int = 16
    """arm pulls per update, one group"""
    learning_rate: float = 0.5
    """SGD's step size on the arm logits"""
    seed: int = 0
    """seeds the pulls and the rewards (a run sets it)"""

    def __post_init__(self) -> None:
        if self.updates < 1 or self.pulls < 2:
            raise ConfigError("pulls", "need at least one update of at least two pulls")


class ArmPreferences(nn.Module):
    def __init__(self, arms: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(arms))


@register("world", "bandit", paper="(test) multi-armed bandit, REINFORCE (Williams 1992)")
@dataclass(frozen=True)
class BanditWorld(World):
    """K arms whose mean rewards rise evenly from 0 to 1; rewards carry Gaussian noise."""

    arms: int = 5
    noise: float = 0.1

    trainers: ClassVar = {"reinforce": ReinforceConfig}
    progress: ClassVar = Axis("pulls", "arm pulls")
    plots: ClassVar = (Plot("mean_reward", "mean reward per pull", "reward.png"),)

    def label(self) -> str:
        return f"{self.arms}-armed bandit"

    def budget(self, trainer: ReinforceConfig) -> int:
        return trainer.updates * trainer.pulls

    def setup(self, seed: int) -> torch.Tensor:
        return torch.linspace(0.0, 1.0, self.arms)

    def train(
        self, setup: torch.Tensor, trainer: ReinforceConfig, recipe: Recipe, progress: Any
    ) -> Trained:
        generator = torch.Generator().manual_seed(trainer.seed)
        policy = ArmPreferences(self.arms)
        optimizer = torch.optim.SGD(policy.parameters(), lr=trainer.learning_rate)
        pipeline = Pipeline(recipe, SignalContext(trainer.seed))
        rows = []
        for update in range(trainer.updates):
            probabilities = torch.softmax(policy.logits.detach(), 0)
            arm = torch.multinomial(probabilities, trainer.pulls, True, generator=generator)
            reward = setup[arm] + self.noise * torch.randn(trainer.pulls, generator=generator)
            batch = Trajectories(
                torch.arange(trainer.pulls + 1),
                {"reward": reward.double()},
                {"group": torch.zeros(trainer.pulls, dtype=torch.long)},
            )
            advantages = pipeline(batch, update).advantages.float()
            loss = -(advantages * torch.log_softmax(policy.logits, 0)[arm]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            pulls = (update + 1) * trainer.pulls
            rows.append({"update": update, "pulls": pulls, "mean_reward": float(reward.mean())})
            progress(pulls)
        return Trained(rows, policy, self.evaluate(setup, policy))

    def evaluate(self, setup: torch.Tensor, policy: ArmPreferences) -> dict[str, float]:
        expected = torch.softmax(policy.logits.detach(), 0) @ setup
        return {"eval_expected_reward": float(expected)}

    def report(self, results: RunResults) -> str:
        lines = ["| method | held-out expected reward |", "|---|---|"]
        for method in results.methods:
            values = [
                e["eval_expected_reward"] for e in results.evaluations if e["method"] == method
            ]
            lines.append(f"| {method} | {sum(values) / len(values):.3f} |")
        return "\n".join([*lines, "", "![reward](reward.png)", ""])
