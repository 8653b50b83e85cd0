"""Observation encoders and the actor-critic used by the PPO trainer."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Normal


def _layer(layer: nn.Module, std: float = float(np.sqrt(2)), bias: float = 0.0) -> nn.Module:
    """Orthogonal initialisation, as in CleanRL's PPO."""
    if isinstance(layer, nn.Linear | nn.Conv2d):
        nn.init.orthogonal_(layer.weight, std)
        if layer.bias is not None:
            nn.init.constant_(layer.bias, bias)
    return layer


class GridEncoder(nn.Module):
    """MiniGrid's egocentric ``[7, 7, 3]`` image (object, colour, state ids) -> features.

    One-hot channels for the three id planes, then a small CNN (the rl-starter-files layout).
    """

    OBJECTS, COLOURS, STATES = 11, 6, 3

    def __init__(self, height: int, width: int, features: int = 64) -> None:
        super().__init__()
        channels = self.OBJECTS + self.COLOURS + self.STATES
        self.conv = nn.Sequential(
            _layer(nn.Conv2d(channels, 16, 2)),
            nn.ReLU(),
            nn.MaxPool2d(2),
            _layer(nn.Conv2d(16, 32, 2)),
            nn.ReLU(),
            _layer(nn.Conv2d(32, features, 2)),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            self.size = self.conv(torch.zeros(1, channels, height, width)).shape[1]

    def forward(self, obs: Tensor) -> Tensor:
        ids = obs.long()
        one_hot = torch.cat(
            [
                nn.functional.one_hot(ids[..., 0].clamp(max=self.OBJECTS - 1), self.OBJECTS),
                nn.functional.one_hot(ids[..., 1].clamp(max=self.COLOURS - 1), self.COLOURS),
                nn.functional.one_hot(ids[..., 2].clamp(max=self.STATES - 1), self.STATES),
            ],
            dim=-1,
        ).float()
        return self.conv(one_hot.permute(0, 3, 1, 2))


class VectorEncoder(nn.Module):
    """Flat observations (classic control) -> features with a two-layer MLP."""

    def __init__(self, size: int, features: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            _layer(nn.Linear(size, features)),
            nn.Tanh(),
            _layer(nn.Linear(features, features)),
            nn.Tanh(),
        )
        self.size = features

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs.float().flatten(1))


def make_encoder(obs_shape: tuple[int, ...]) -> GridEncoder | VectorEncoder:
    """A grid CNN for ``[h, w, 3]`` integer images, an MLP for anything else."""
    if len(obs_shape) == 3 and obs_shape[-1] == 3:
        return GridEncoder(obs_shape[0], obs_shape[1])
    return VectorEncoder(int(np.prod(obs_shape)))


class ActorCritic(nn.Module):
    """Separate actor and critic over separate encoders (CleanRL's PPO agents).

    Discrete actions: a categorical policy. Continuous actions (``action_dim`` given): a diagonal
    Gaussian with a state-independent log standard deviation, as in CleanRL's continuous PPO.
    """

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        num_actions: int = 0,
        hidden: int = 64,
        action_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.continuous = action_dim is not None
        outputs = action_dim if action_dim is not None else num_actions
        self.actor_encoder, self.critic_encoder = make_encoder(obs_shape), make_encoder(obs_shape)
        self.actor = nn.Sequential(
            _layer(nn.Linear(self.actor_encoder.size, hidden)),
            nn.Tanh(),
            _layer(nn.Linear(hidden, outputs), std=0.01),
        )
        self.critic = nn.Sequential(
            _layer(nn.Linear(self.critic_encoder.size, hidden)),
            nn.Tanh(),
            _layer(nn.Linear(hidden, 1), std=1.0),
        )
        self.log_std = nn.Parameter(torch.zeros(outputs)) if self.continuous else None

    def value(self, obs: Tensor) -> Tensor:
        return self.critic(self.critic_encoder(obs)).squeeze(-1)

    def distribution(self, obs: Tensor) -> Distribution:
        output = self.actor(self.actor_encoder(obs))
        if self.log_std is not None:
            return Normal(output, self.log_std.expand_as(output).exp())
        return Categorical(logits=output)

    def act(
        self, obs: Tensor, action: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(action, log_prob, entropy, value)``; samples an action when none is given."""
        distribution = self.distribution(obs)
        if action is None:
            action = distribution.sample()
        log_prob, entropy = distribution.log_prob(action), distribution.entropy()
        if self.continuous:  # independent dimensions: sum over the action vector
            log_prob, entropy = log_prob.sum(-1), entropy.sum(-1)
        return action, log_prob, entropy, self.value(obs)
