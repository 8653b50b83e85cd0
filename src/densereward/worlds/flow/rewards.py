"""Rewards a program computes on 2-D samples: the gold one, and a hackable linear-probe proxy.

**Gold**: ``R(x, c) = exp(-||x - μ_c||² / (2 w²))`` with ``μ_c`` the prompt's target mode and
``w = GOLD_WIDTH``: in [0, 1], 1 exactly on the target.

**Proxy**: a linear probe ``R̃(x, c) = a_c + b_c · x`` fitted by least squares to the gold reward
on the prompt's data. On the data it ranks samples almost as gold does (the target mode scores
high, the other low), but it grows without bound along ``b_c``: a policy that walks past the
target, off the data, scores ever higher on the proxy while its gold reward falls to 0 — reward
hacking in the sense of "Understanding Reward Hacking in Text-to-Image RL" (a proxy that is
right on the data and wrong off it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from densereward.worlds.flow.model import Mixture

GOLD_WIDTH = 0.35
PROBE_SAMPLES = 4096


def gold_reward(x: Tensor, prompts: Tensor, targets: Tensor) -> Tensor:
    """``exp(-||x - μ_c||² / (2 w²))`` per row: ``[n, 2], [n] -> [n]``."""
    distance = (x - targets[prompts]).pow(2).sum(1)
    return torch.exp(-distance / (2 * GOLD_WIDTH**2))


@dataclass(frozen=True)
class Rewards:
    """Gold and proxy reward of one world: ``targets [prompts, 2]``, the probe's ``weights
    [prompts, 3]`` (``a_c, b_c``)."""

    targets: Tensor
    weights: Tensor

    @staticmethod
    def fit(data: Mixture, generator: torch.Generator) -> Rewards:
        """Fit the proxy probe on ``PROBE_SAMPLES`` data points per prompt."""
        targets = data.targets()
        weights = []
        for c in range(data.prompts):
            prompts = torch.full((PROBE_SAMPLES,), c, dtype=torch.long)
            x = data.sample(prompts, generator)
            features = torch.cat([torch.ones(PROBE_SAMPLES, 1), x], 1).double()
            gold = gold_reward(x, prompts, targets).double().unsqueeze(1)
            weights.append(torch.linalg.lstsq(features, gold).solution.squeeze(1).float())
        return Rewards(targets, torch.stack(weights))

    def gold(self, x: Tensor, prompts: Tensor) -> Tensor:
        return gold_reward(x, prompts, self.targets)

    def proxy(self, x: Tensor, prompts: Tensor) -> Tensor:
        w = self.weights[prompts]
        return w[:, 0] + (w[:, 1:] * x).sum(1)

    def of(self, kind: str, x: Tensor, prompts: Tensor) -> Tensor:
        """The reward named ``kind`` (``gold`` or ``proxy``)."""
        return self.gold(x, prompts) if kind == "gold" else self.proxy(x, prompts)


__all__ = ["GOLD_WIDTH", "Rewards", "gold_reward"]
