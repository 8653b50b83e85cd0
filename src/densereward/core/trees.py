"""Rollout trees: trajectories that share prefixes (truncated step-level sampling, MC labeling).

A tree batch stores every step once. Trajectory ``i`` owns the steps it added; its first step's
``parent`` is the step it branched from (or -1 for a root), so its full path is the ancestors of
that step followed by its own segment. See :class:`~densereward.core.trajectories.Trajectories`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from densereward.core.errors import ValidationError
from densereward.core.segments import Segments
from densereward.core.trajectories import Trajectories


@dataclass(frozen=True, eq=False)
class Paths:
    """Root-to-leaf path of every trajectory, as CSR: ``steps[segments.offsets[i]:...[i+1]]``."""

    steps: Tensor
    segments: Segments


def tree_paths(batch: Trajectories) -> Paths:
    """Full root-to-leaf step indices of every trajectory, without a loop over steps or depth.

    Depth comes from pointer jumping and each path entry's ancestor from binary lifting, so the
    work is ``O(path entries * log(depth))`` in vectorized gathers.

    >>> batch = Trajectories.from_episodes({"r": [[0.0, 0.0], [0.0]]}, parent=[[-1, 0], [0]])
    >>> paths = tree_paths(batch)
    >>> paths.steps.tolist(), paths.segments.lengths.tolist()
    ([0, 1, 0, 2], [2, 2])
    """
    parent = batch.parent
    n = batch.num_steps
    if parent is None:
        return Paths(torch.arange(n, device=batch.device), batch.segments)
    index = torch.arange(n, device=parent.device)
    # Roots point to themselves, so every jump saturates at the root.
    hop = torch.where(parent >= 0, parent, index)
    # Pointer jumping: invariant depth[v] = distance from v to ancestor[v]; each round doubles it.
    depth = (parent >= 0).to(torch.int64)
    ancestor = hop
    while True:
        jumped = ancestor[ancestor]
        if bool((jumped == ancestor).all()):
            break
        depth = depth + depth[ancestor]
        ancestor = jumped
    # Binary lifting tables: lift[k][v] = the 2^k-th ancestor of v.
    leaves = batch.segments.last
    lengths = depth[leaves] + 1
    offsets = torch.zeros(len(batch) + 1, dtype=torch.int64, device=parent.device)
    torch.cumsum(lengths, 0, out=offsets[1:])
    segments = Segments(offsets)
    # Entry k of path i is the ancestor of leaf_i at distance (length_i - 1 - k).
    node = leaves[segments.ids]
    distance = (lengths[segments.ids] - 1) - segments.positions
    lift = hop
    for bit in range(max(1, int(distance.max()).bit_length())):
        node = torch.where((distance >> bit) & 1 == 1, lift[node], node)
        lift = lift[lift]
    return Paths(node, segments)


def step_depth(batch: Trajectories) -> Tensor:
    """Number of ancestors of each step (0 for a root)."""
    if batch.parent is None:
        return batch.segments.positions
    paths = tree_paths(batch)
    depth = torch.full((batch.num_steps,), -1, dtype=torch.int64, device=batch.device)
    depth[paths.steps] = paths.segments.positions
    if bool((depth < 0).any()):
        raise ValidationError("parent", "some steps are on no trajectory's path")
    return depth
