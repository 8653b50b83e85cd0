"""Diffusion tree sampling at inference: a search tree over denoising states whose soft values are
backed up from terminal rewards and reused by every later rollout."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from densereward.worlds.flow.model import VelocityField, sde_mean_std, time_grid

Terminal = Callable[[Tensor, Tensor], Tensor]
"""``(clean samples [N, 2], prompts [N]) -> r [N]``: the reward of finished samples."""


@dataclass(frozen=True)
class Tree:
    """One tree per system, ``nodes = 1 + rollouts · (T + 1)`` slots each: ``states [S, nodes, 2]``
    (node 0 is the root above the noise), ``depth [S, nodes]`` (root -1, noise 0, clean ``T``),
    ``children [S, nodes, width]`` (node ids, -1 empty), ``values [S, nodes]`` (soft values),
    ``used [S]`` (slots filled), ``evaluations`` (velocity-field evaluations, all systems)."""

    states: Tensor
    depth: Tensor
    children: Tensor
    values: Tensor
    used: Tensor
    evaluations: int


@dataclass(frozen=True)
class TreeSamples:
    """``samples [systems, 2]`` drawn from the tree (DTS), ``best [systems, 2]`` the highest-
    reward leaf found (DTS*), their rewards, and the tree."""

    samples: Tensor
    best: Tensor
    best_reward: Tensor
    tree: Tree


def soft_value(child_values: Tensor, present: Tensor, strength: float) -> Tensor:
    """``V(x) = (1/λ) log mean_{c ∈ children(x)} exp(λ V(c))`` over the present children (rows)."""
    scaled = torch.where(
        present, strength * child_values, torch.full_like(child_values, -torch.inf)
    )
    count = present.sum(-1).clamp(min=1).to(child_values.dtype)
    return (torch.logsumexp(scaled, -1) - count.log()) / strength


@torch.no_grad()
def tree_sample(
    model: VelocityField,
    prompts: Tensor,
    rollouts: int,
    steps: int,
    noise_level: float,
    reward: Terminal,
    generator: torch.Generator,
    strength: float = 10.0,
    width: int = 4,
) -> TreeSamples:
    """Diffusion Tree Sampling (Jain et al. 2025, "Diffusion Tree Sampling: Scalable inference-time
    alignment of diffusion models"), one tree per entry of ``prompts``.

    Every node is a state; its children are draws from the pretrained SDE step ``p_θ(x_{k+1} |
    x_k)`` (the root's: from the noise prior). Each of ``rollouts`` rounds, in every tree at once:

    1. *select*: from the root, while the current node has ``width`` children, move to child
       ``c`` with probability ``∝ exp(λ V(c))`` (``λ = strength``);
    2. *expand*: draw a new child from ``p_θ`` and continue the SDE to a clean sample, adding
       every state on the way as a node;
    3. *back up*: the new leaf's value is its reward ``r(x_0)``; every node on the path gets the
       soft Bellman value ``V(x) = (1/λ) log mean_c exp(λ V(c))``.

    Because children are prior draws, ``mean_c exp(λ V(c))`` estimates
    ``E_{p_θ}[exp(λ V(x_{k+1}))]``, and descending by ``exp(λ V)`` samples (asymptotically in
    ``rollouts``) the tilted target ``p_θ(x_0 | c) exp(λ r(x_0)) / Z``: ``samples`` are drawn
    that way after the last round (DTS). ``best`` is the highest-reward leaf found (DTS*, the
    greedy search variant). With a constant reward every ``V`` is equal, selection is uniform
    over i.i.d. prior children, and ``samples`` are distributed as plain SDE samples.

    Cost: each round evaluates the velocity field once per *new* node, so later rounds that
    reuse a deeper existing path cost less than a fresh sample (``Tree.evaluations``).
    """
    systems = prompts.shape[0]
    grid = time_grid(steps)
    nodes = 1 + rollouts * (steps + 1)
    states = torch.zeros(systems, nodes, model.dims)
    depth = torch.full((systems, nodes), -2, dtype=torch.long)
    depth[:, 0] = -1
    children = torch.full((systems, nodes, width), -1, dtype=torch.long)
    values = torch.zeros(systems, nodes)
    used = torch.ones(systems, dtype=torch.long)
    rows = torch.arange(systems)
    evaluations = 0
    best = torch.zeros(systems, model.dims)
    best_reward = torch.full((systems,), -torch.inf)

    def select(current: Tensor, among: Tensor) -> Tensor:
        """A child of each ``current`` node, drawn ∝ exp(λ V) (rows of ``among``)."""
        index = torch.nonzero(among).squeeze(1)
        ids = children[index, current[index]]
        logits = strength * values[index.unsqueeze(1), ids.clamp(min=0)]
        logits = torch.where(ids >= 0, logits, torch.full_like(logits, -torch.inf))
        pick = torch.multinomial(torch.softmax(logits, 1), 1, generator=generator).squeeze(1)
        return ids.gather(1, pick.unsqueeze(1)).squeeze(1)

    for _ in range(rollouts):
        current = torch.zeros(systems, dtype=torch.long)
        path = [current]
        expanding = torch.zeros(systems, dtype=torch.bool)
        for level in range(steps + 1):  # the node reached at grid index ``level``
            full = (children[rows, current] >= 0).all(1)
            walk = ~expanding & full
            expanding = ~walk
            following = current.clone()
            if bool(walk.any()):
                following[walk] = select(current, walk)
            if bool(expanding.any()):
                grow = torch.nonzero(expanding).squeeze(1)
                parent = states[grow, current[grow]]
                if level == 0:
                    new = torch.randn(grow.shape[0], model.dims, generator=generator)
                else:
                    mean, std = sde_mean_std(
                        parent,
                        model(parent, grid[level - 1], prompts[grow]),
                        grid,
                        level - 1,
                        noise_level,
                    )
                    new = mean + std * torch.randn(parent.shape, generator=generator)
                    evaluations += grow.shape[0]
                slot = used[grow]
                states[grow, slot] = new
                depth[grow, slot] = level
                free = (children[grow, current[grow]] < 0).long().argmax(1)
                children[grow, current[grow], free] = slot
                used[grow] += 1
                following[grow] = slot
            current = following
            path.append(current)
        leaf_reward = reward(states[rows, current], prompts)
        values[rows, current] = leaf_reward
        better = leaf_reward > best_reward
        best[better], best_reward[better] = states[rows, current][better], leaf_reward[better]
        for node in reversed(path[:-1]):
            ids = children[rows, node]
            child_values = values[rows.unsqueeze(1), ids.clamp(min=0)]
            values[rows, node] = soft_value(child_values, ids >= 0, strength)
    current = torch.zeros(systems, dtype=torch.long)
    everyone = torch.ones(systems, dtype=torch.bool)
    for _ in range(steps + 1):
        current = select(current, everyone)
    tree = Tree(states, depth, children, values, used, evaluations)
    return TreeSamples(states[rows, current], best, best_reward, tree)


__all__ = ["Tree", "TreeSamples", "soft_value", "tree_sample"]
