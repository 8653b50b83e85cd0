"""Text captions of MiniGrid observations, for annotators that read language (LLMs, rules)."""

from __future__ import annotations

import numpy as np

OBJECTS = {2: "wall", 4: "door", 5: "key", 6: "ball", 7: "box", 8: "goal"}
DOOR_STATES = {0: "open", 1: "closed", 2: "locked"}
AGENT = (3, 6)


def describe(observations: np.ndarray) -> list[str]:
    """One caption per egocentric ``[7, 7, 3]`` observation: what the agent carries and sees."""
    captions = []
    for obs in observations:
        carried = OBJECTS.get(int(obs[AGENT[0], AGENT[1], 0]))
        parts = [
            f"You carry a {carried}." if carried in ("key", "ball", "box") else "You carry nothing."
        ]
        seen = set()
        for x in range(obs.shape[0]):
            for y in range(obs.shape[1]):
                if (x, y) == AGENT:
                    continue
                kind = OBJECTS.get(int(obs[x, y, 0]))
                if kind == "door":
                    state = DOOR_STATES.get(int(obs[x, y, 2]), "closed")
                    seen.add(f"{'an' if state == 'open' else 'a'} {state} door")
                elif kind in ("key", "goal", "ball", "box"):
                    seen.add(f"a {kind}")
        parts.append(
            "You see " + ", ".join(sorted(seen)) + "." if seen else "You see nothing of note."
        )
        captions.append(" ".join(parts))
    return captions
