"""What a trainer checks before it lets the optimiser step: no non-finite loss or gradient.

The pipeline has already refused non-finite advantages and returns in the trainer's dtype
(``Pipeline(..., dtype=)``); what remains can still overflow inside the loss (a return of 1e38
squared) or the backward pass. Stepping on it would write NaN into every parameter and the run
would go on, logging ``policy_loss: nan`` to the end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from densereward.core.errors import NonFiniteError


def clip_and_check(
    losses: Mapping[str, Tensor],
    parameters: Iterable[nn.Parameter],
    max_norm: float,
) -> Tensor:
    """Clip the gradients to ``max_norm`` and return their norm before clipping, after checking
    that every loss term (in the order given: the first non-finite one is named) and the
    gradient norm are finite. Call between ``backward()`` and ``optimizer.step()``."""
    for name, value in losses.items():
        if not bool(torch.isfinite(value.detach()).all()):
            raise NonFiniteError(name, f"is {float(value.detach().flatten()[0])}")
    norm = nn.utils.clip_grad_norm_(list(parameters), max_norm)
    if not bool(torch.isfinite(norm)):
        raise NonFiniteError("gradient", f"norm is {float(norm)} (the losses were finite)")
    return norm


def located(error: NonFiniteError, seed: int, update: int) -> NonFiniteError:
    """``error`` as seen from a trainer: at ``seed``'s ``update``."""
    return error.within(f"seed {seed}", f"update {update}")
