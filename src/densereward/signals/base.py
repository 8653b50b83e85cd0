"""What a signal may be given before use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SignalContext:
    """Handed to ``prepare``: the run's seed, and demonstrations if the world can make them.

    ``demonstrations(n)`` returns ``n`` successful episodes' observations (one array each).
    """

    seed: int = 0
    demonstrations: Callable[[int], list[np.ndarray]] | None = None
