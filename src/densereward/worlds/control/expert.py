"""A scripted expert for MiniGrid DoorKey: demonstrations for progress models.

It plans with breadth-first search over (position, direction) on the true grid: fetch the key,
open the door, reach the goal. Used only to make demonstrations; policies never see the grid.
"""

from __future__ import annotations

from collections import deque

import numpy as np

LEFT, RIGHT, FORWARD, PICKUP, TOGGLE = 0, 1, 2, 3, 5
DIRECTIONS = ((1, 0), (0, 1), (-1, 0), (0, -1))  # MiniGrid: 0 right, 1 down, 2 left, 3 up


def _passable(grid, x: int, y: int) -> bool:
    cell = grid.get(x, y)
    return cell is None or cell.type == "goal" or (cell.type == "door" and cell.is_open)


def _plan(env, targets: set[tuple[int, int]], face: bool) -> list[int]:
    """Shortest action list to stand on a target (face=False) or to face one (face=True)."""
    grid = env.grid
    start = (*env.agent_pos, env.agent_dir)
    queue: deque[tuple[tuple[int, int, int], list[int]]] = deque([(start, [])])
    seen = {start}
    while queue:
        (x, y, d), path = queue.popleft()
        dx, dy = DIRECTIONS[d]
        if (face and (x + dx, y + dy) in targets) or (not face and (x, y) in targets):
            return path
        moves = [((x, y, (d - 1) % 4), LEFT), ((x, y, (d + 1) % 4), RIGHT)]
        if _passable(grid, x + dx, y + dy):
            moves.append(((x + dx, y + dy, d), FORWARD))
        for state, action in moves:
            if state not in seen:
                seen.add(state)
                queue.append((state, [*path, action]))
    raise RuntimeError("no path: the expert only handles DoorKey layouts")


def _find(env, kind: str) -> tuple[int, int]:
    for index, cell in enumerate(env.grid.grid):
        if cell is not None and cell.type == kind:
            return index % env.grid.width, index // env.grid.width
    raise RuntimeError(f"no {kind} in the grid")


def expert_actions(env) -> list[int]:
    """The remaining actions that solve a DoorKey episode from the current state (unwrapped env)."""
    if env.carrying is None and not _door_open(env):
        return [*_plan(env, {_find(env, "key")}, face=True), PICKUP]
    if not _door_open(env):
        return [*_plan(env, {_find(env, "door")}, face=True), TOGGLE]
    return _plan(env, {_find(env, "goal")}, face=False)


def _door_open(env) -> bool:
    x, y = _find(env, "door")
    return bool(env.grid.get(x, y).is_open)


def demonstrations(env_id: str, episodes: int, seed: int) -> list[np.ndarray]:
    """Observations of ``episodes`` successful expert episodes (one ``[T, ...]`` array each)."""
    from densereward.worlds.control.envs import make_env

    env = make_env(env_id)
    out = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        observations = [obs]
        done = False
        while not done:
            action = expert_actions(env.unwrapped)[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
            if not done:
                observations.append(obs)
        if not (terminated and float(reward) > 0):
            raise RuntimeError(f"expert failed on {env_id} seed {seed + episode}")
        out.append(np.stack(observations))
    env.close()
    return out
