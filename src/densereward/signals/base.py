"""What a signal may be given before use."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SignalContext:
    """Handed to ``prepare``: the run's seed, demonstrations if the world can make them, and the
    models a language world shares with its signals.

    ``demonstrations(n)`` returns ``n`` successful episodes' observations (one array each).
    ``models`` maps names to objects a signal refers to by name in its recipe: ``"policy"`` (the
    live causal LM being trained), ``"reference"`` (its frozen start), trained PRMs; ``tokenizer``
    is the tokenizer they share.
    """

    seed: int = 0
    demonstrations: Callable[[int], list[np.ndarray]] | None = None
    models: Mapping[str, Any] = field(default_factory=dict)
    tokenizer: Any = None
