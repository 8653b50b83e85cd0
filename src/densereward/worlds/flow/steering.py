"""Feynman-Kac steering at inference: particles resampled by potentials of intermediate states."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from densereward.worlds.flow.model import VelocityField, sde_mean_std, time_grid

Intermediate = Callable[[Tensor, int, Tensor], Tensor]
"""``(states [N, dims], grid index, prompts [N]) -> r [N]``: an intermediate reward of each state
(the reward of its ODE completion, say)."""


@dataclass(frozen=True)
class Steered:
    """``samples [systems, particles, dims]``, their final ``log_weights`` (normalised per system),
    and how many resampling events each system had."""

    samples: Tensor
    log_weights: Tensor
    resamplings: Tensor


def effective_sample_size(log_weights: Tensor) -> Tensor:
    """``(Σ w)² / Σ w²`` per row of ``[systems, particles]`` log-weights."""
    w = torch.softmax(log_weights, 1)
    return 1.0 / w.pow(2).sum(1)


@torch.no_grad()
def fk_steer(
    model: VelocityField,
    prompts: Tensor,
    particles: int,
    steps: int,
    noise_level: float,
    reward: Intermediate,
    generator: torch.Generator,
    strength: float = 10.0,
    resample: Literal["every", "adaptive"] = "adaptive",
    ess_fraction: float = 0.5,
) -> Steered:
    """FK steering (Singhal et al. 2025, "A General Framework for Inference-time Scaling and
    Steering of Diffusion Models") with the *difference* potential.

    One system of ``particles`` per entry of ``prompts``, each moved by the SDE sampler. After
    step ``k`` every particle is weighted by ``G_k = exp(λ (r_k - r_{k-1}))`` (``r_{-1} = 0``,
    ``λ = strength``), so the product over the chain is ``exp(λ r(x_0))`` and the particle system
    targets ``p(x_0 | c) exp(λ r(x_0)) / Z``. Systems are resampled multinomially by their
    accumulated weights after every step (``"every"``) or when the effective sample size drops
    below ``ess_fraction · particles`` (``"adaptive"``), weights reset to uniform after each
    resampling. With a constant potential the weights never change: ``"adaptive"`` never
    resamples and returns exactly what plain SDE sampling with the same generator returns.
    """
    systems = prompts.shape[0]
    grid = time_grid(steps)
    flat_prompts = prompts.repeat_interleave(particles)
    dims = model.dims
    x = torch.randn(systems * particles, dims, generator=generator)
    log_weights = torch.zeros(systems, particles)
    previous = torch.zeros(systems, particles)
    resamplings = torch.zeros(systems, dtype=torch.long)
    for k in range(steps):
        mean, std = sde_mean_std(x, model(x, grid[k], flat_prompts), grid, k, noise_level)
        x = mean + std * torch.randn(x.shape, generator=generator)
        current = reward(x, k + 1, flat_prompts).view(systems, particles)
        log_weights = log_weights + strength * (current - previous)
        previous = current
        if resample == "every":
            due = torch.ones(systems, dtype=torch.bool)
        else:
            due = effective_sample_size(log_weights) < ess_fraction * particles
        if bool(due.any()):
            rows = torch.nonzero(due).squeeze(1)
            chosen = torch.multinomial(
                torch.softmax(log_weights[rows], 1), particles, True, generator=generator
            )
            view = x.view(systems, particles, dims)
            view[rows] = torch.gather(view[rows], 1, chosen.unsqueeze(2).expand(-1, -1, dims))
            previous[rows] = torch.gather(previous[rows], 1, chosen)
            log_weights[rows] = 0.0
            resamplings += due.long()
    normalised = log_weights - torch.logsumexp(log_weights, 1, keepdim=True)
    return Steered(x.view(systems, particles, dims), normalised, resamplings)


__all__ = ["Steered", "effective_sample_size", "fk_steer"]
