from __future__ import annotations

from hypothesis import given

from densereward import Trajectories
from densereward.core.trees import tree_paths
from tests.strategies import trees


@given(trees(max_trajectories=10, max_length=6))
def test_tree_paths_match_parent_walk(batch: Trajectories) -> None:
    parent = batch.parent.tolist()
    offsets = batch.offsets.tolist()
    paths = tree_paths(batch)
    bounds = paths.segments.offsets.tolist()
    for i in range(len(batch)):
        walk, node = [], offsets[i + 1] - 1
        while node != -1:
            walk.append(node)
            node = parent[node]
        assert paths.steps[bounds[i] : bounds[i + 1]].tolist() == walk[::-1]
