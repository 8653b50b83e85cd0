"""The generator: a prompt-conditioned rectified-flow velocity field on 2-D points or 8×8 images
(flattened to 64 numbers), its data, and the samplers (the ODE for evaluation and completions, Flow-GRPO's SDE with exact per-step
Gaussian log-probabilities for RL).

Time runs from ``t = 1`` (noise) to ``t = 0`` (data) on the grid ``t_k = 1 - k / T``; rectified
flow interpolates ``x_t = (1 - t) x_0 + t ε`` and the network learns ``v(x_t, t, c) ≈ ε - x_0``,
so an Euler step of the ODE is ``x_{t+dt} = x_t + dt · v`` with ``dt = t_{k+1} - t_k < 0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

RING_RADIUS = 2.0
MODE_STD = 0.12
FREQUENCIES = 4
"""Sine/cosine features of t at frequencies 1..FREQUENCIES."""


@dataclass(frozen=True)
class Mixture:
    """The data: ``2 · prompts`` Gaussian modes evenly on a ring; prompt ``c`` owns the adjacent
    modes ``2c`` (weight ``1 - target_weight``) and ``2c + 1`` (weight ``target_weight``), the
    second being the prompt's *target* that the gold reward asks for."""

    prompts: int = 4
    target_weight: float = 0.25
    dims: int = 2

    def centers(self) -> Tensor:
        angles = torch.arange(2 * self.prompts, dtype=torch.float32) * (math.pi / self.prompts)
        return RING_RADIUS * torch.stack([angles.cos(), angles.sin()], 1)

    def targets(self) -> Tensor:
        """``[prompts, 2]``: the target mode of each prompt."""
        return self.centers()[1::2]

    def others(self) -> Tensor:
        """``[prompts, 2]``: the other (more frequent) mode of each prompt."""
        return self.centers()[0::2]

    def sample(self, prompts: Tensor, generator: torch.Generator) -> Tensor:
        """One data point per entry of ``prompts`` (``[n]`` long) -> ``[n, 2]``."""
        hit = torch.rand(prompts.shape[0], generator=generator) < self.target_weight
        mode = 2 * prompts + hit.long()
        noise = torch.randn(prompts.shape[0], 2, generator=generator)
        return self.centers()[mode] + MODE_STD * noise


class VelocityField(nn.Module):
    """``v_θ(x, t, c)``: an MLP on the sample (``dims`` numbers), Fourier features of t and a
    prompt embedding."""

    def __init__(self, prompts: int, hidden: int = 128, dims: int = 2) -> None:
        super().__init__()
        self.dims = dims
        self.embedding = nn.Embedding(prompts, 16)
        self.net = nn.Sequential(
            nn.Linear(dims + 1 + 2 * FREQUENCIES + 16, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, dims),
        )

    def forward(self, x: Tensor, t: Tensor, prompts: Tensor) -> Tensor:
        t = t.reshape(-1, 1).expand(x.shape[0], 1)
        angles = t * (2 * math.pi) * torch.arange(1, FREQUENCIES + 1, dtype=x.dtype)
        features = [x, t, angles.sin(), angles.cos(), self.embedding(prompts)]
        return self.net(torch.cat(features, 1))


class Data(Protocol):
    """What the generator learns: ``prompts`` classes of ``dims``-number samples."""

    @property
    def prompts(self) -> int: ...

    @property
    def dims(self) -> int: ...

    def sample(self, prompts: Tensor, generator: torch.Generator) -> Tensor: ...


def pretrain(
    model: VelocityField,
    data: Data,
    steps: int,
    generator: torch.Generator,
    batch_size: int = 256,
    learning_rate: float = 2e-3,
) -> list[float]:
    """Conditional flow matching: minimise ``||v_θ(x_t, t, c) - (ε - x_0)||²``; returns losses."""
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    losses = []
    for _ in range(steps):
        prompts = torch.randint(data.prompts, (batch_size,), generator=generator)
        x0 = data.sample(prompts, generator)
        noise = torch.randn(batch_size, data.dims, generator=generator)
        t = torch.rand(batch_size, 1, generator=generator)
        xt = (1 - t) * x0 + t * noise
        loss = (model(xt, t, prompts) - (noise - x0)).pow(2).sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def time_grid(steps: int) -> Tensor:
    """``t_k = 1 - k / T`` for ``k = 0..T``."""
    return torch.linspace(1.0, 0.0, steps + 1)


NoiseLevel = float | Tensor
"""``a`` of the SDE: one float for every step, or one per step (``[T]``, DenseGRPO's calibrated,
timestep-specific stochasticity)."""


def level_at(noise_level: NoiseLevel, k: int | Tensor) -> float | Tensor:
    """``a_k``: the noise level of step ``k`` (a float applies to every step)."""
    return noise_level[k] if isinstance(noise_level, Tensor) else noise_level


def sde_std(grid: Tensor, k: int | Tensor, noise_level: NoiseLevel) -> Tensor:
    """Flow-GRPO's ``σ_t = a · sqrt(t / (1 - t))`` at ``t_k``, with ``t_1`` in the denominator at
    ``t_0 = 1`` (as its ``sde_step_with_logprob`` does), so the first step is finite."""
    t = grid[k]
    denominator = 1 - torch.where(t >= 1.0, grid[1], t)
    return level_at(noise_level, k) * torch.sqrt(t / denominator)


def sde_mean_std(
    x: Tensor, velocity: Tensor, grid: Tensor, k: int, noise_level: NoiseLevel
) -> tuple[Tensor, Tensor]:
    """Mean and std of Flow-GRPO's SDE step from ``t_k`` to ``t_{k+1}`` (Liu et al. 2025, eq. 7):

    ``x_{t+dt} = x_t + [v + σ_t² / (2t) · (x_t + (1 - t) v)] dt + σ_t sqrt(|dt|) ε``, ``dt < 0``.

    Its marginals match the ODE's for the exact velocity; ``noise_level = 0`` is the Euler ODE step.
    """
    t, dt = grid[k], grid[k + 1] - grid[k]
    sigma = sde_std(grid, k, noise_level)
    mean = x + dt * (velocity + sigma**2 / (2 * t) * (x + (1 - t) * velocity))
    return mean, sigma * torch.sqrt(-dt)


def gaussian_log_prob(value: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """``log N(value; mean, std² I)`` summed over the last dimension (``std``: a scalar or one
    per row)."""
    variance = std**2
    squared = (value - mean).pow(2).sum(-1)
    dims = value.shape[-1]
    return -squared / (2 * variance) - dims * (torch.log(std) + 0.5 * math.log(2 * math.pi))


@dataclass(frozen=True)
class SDETrajectory:
    """``states [n, T, 2]`` (x before each step), ``next_states [n, T, 2]``, ``log_probs [n, T]``
    of each step under the sampling policy, ``means [n, T, 2]`` and ``stds [T]``."""

    states: Tensor
    next_states: Tensor
    log_probs: Tensor
    means: Tensor
    stds: Tensor

    @property
    def final(self) -> Tensor:
        return self.next_states[:, -1]


@torch.no_grad()
def sample_sde(
    model: VelocityField,
    prompts: Tensor,
    steps: int,
    noise_level: NoiseLevel,
    generator: torch.Generator,
    initial: Tensor | None = None,
    start: int = 0,
    stop: int | None = None,
) -> SDETrajectory:
    """Sample ``len(prompts)`` trajectories with the SDE, keeping every step's log-probability;
    from fresh noise, or from ``initial`` states standing at grid index ``start``, up to grid
    index ``stop`` (default ``T``): the returned arrays hold steps ``start .. stop - 1``."""
    grid = time_grid(steps)
    if initial is None:
        x = torch.randn(prompts.shape[0], model.dims, generator=generator)
    else:
        x = initial
    states, nexts, log_probs, means, stds = [], [], [], [], []
    for k in range(start, steps if stop is None else stop):
        mean, std = sde_mean_std(x, model(x, grid[k], prompts), grid, k, noise_level)
        following = mean + std * torch.randn(x.shape, generator=generator)
        states.append(x)
        nexts.append(following)
        log_probs.append(gaussian_log_prob(following, mean, std))
        means.append(mean)
        stds.append(std)
        x = following
    return SDETrajectory(
        torch.stack(states, 1),
        torch.stack(nexts, 1),
        torch.stack(log_probs, 1),
        torch.stack(means, 1),
        torch.stack(stds),
    )


def step_log_probs(
    model: VelocityField,
    states: Tensor,
    next_states: Tensor,
    indices: Tensor,
    prompts: Tensor,
    steps: int,
    noise_level: NoiseLevel,
) -> tuple[Tensor, Tensor]:
    """Per-step ``log π_θ(x_{k+1} | x_k, c)`` and the step means, for flat ``[N, 2]`` states at
    grid indices ``indices`` (differentiable in ``model``)."""
    grid = time_grid(steps)
    t = grid[indices]
    velocity = model(states, t, prompts)
    dt = (grid[indices + 1] - t).unsqueeze(1)
    sigma = sde_std(grid, indices, noise_level).unsqueeze(1)
    t = t.unsqueeze(1)
    mean = states + dt * (velocity + sigma**2 / (2 * t) * (states + (1 - t) * velocity))
    std = (sigma * torch.sqrt(-dt)).squeeze(1)
    return gaussian_log_prob(next_states, mean, std), mean


@torch.no_grad()
def complete_ode(
    model: VelocityField,
    x: Tensor,
    indices: Tensor,
    prompts: Tensor,
    steps: int,
    stride: int = 1,
) -> Tensor:
    """The deterministic (Euler ODE) completion ``x̂_0`` of states ``x [N, 2]`` standing at grid
    indices ``indices [N]`` (index ``T`` is already clean: returned as is).

    ``stride`` is the completion's granularity: Euler steps of ``stride`` grid intervals, from
    ``t_k`` to ``t_{min(k + stride, T)}`` (G²RPO's coarser denoising scales; 1 = the sampler's)."""
    grid = time_grid(steps)
    x = x.clone()
    at = indices.clone()  # each state's grid index as it is completed; only ever increases
    for k in range(steps):
        active = at == k
        if not bool(active.any()):
            continue
        following = min(k + stride, steps)
        velocity = model(x[active], grid[k], prompts[active])
        x[active] = x[active] + (grid[following] - grid[k]) * velocity
        at[active] = following
    return x


@torch.no_grad()
def sample_ode(
    model: VelocityField, prompts: Tensor, steps: int, generator: torch.Generator
) -> Tensor:
    """ODE samples from fresh noise: ``[n, dims]``."""
    noise = torch.randn(prompts.shape[0], model.dims, generator=generator)
    return complete_ode(model, noise, torch.zeros_like(prompts), prompts, steps)


__all__ = [
    "Data",
    "Mixture",
    "NoiseLevel",
    "SDETrajectory",
    "VelocityField",
    "complete_ode",
    "gaussian_log_prob",
    "level_at",
    "pretrain",
    "sample_ode",
    "sample_sde",
    "sde_mean_std",
    "sde_std",
    "step_log_probs",
    "time_grid",
]
