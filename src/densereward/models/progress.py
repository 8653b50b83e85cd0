"""Progress models: how far along the task a state is, learned from successful episodes."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from densereward.models.networks import make_encoder


class ProgressModel(nn.Module):
    """``g(s) in [0, 1]``: the fraction of a successful episode completed at state ``s``.

    Trained by regression on ``t / (T - 1)`` over demonstrations (Robo-Dopamine's step-aware
    progress model; Sermanet et al.'s perceptual rewards learn the same quantity from a few
    demonstrations). Used as a shaping potential ``Phi(s) = scale * g(s)``, it cannot change the
    optimal policy whatever its errors (Ng et al. 1999) — only how fast it is found.
    """

    def __init__(self, obs_shape: tuple[int, ...], hidden: int = 64) -> None:
        super().__init__()
        self.encoder = make_encoder(obs_shape)
        self.head = nn.Sequential(
            nn.Linear(self.encoder.size, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def forward(self, obs: Tensor) -> Tensor:
        return torch.sigmoid(self.head(self.encoder(obs))).squeeze(-1)

    def fit(
        self,
        episodes: list[np.ndarray],
        steps: int = 400,
        batch_size: int = 128,
        learning_rate: float = 3e-3,
        seed: int = 0,
    ) -> float:
        """Regress progress on demonstration states; returns the final mean squared error."""
        generator = torch.Generator().manual_seed(seed)
        obs = torch.from_numpy(np.concatenate(episodes))
        target = torch.from_numpy(
            np.concatenate(
                [np.linspace(0.0, 1.0, len(e)) if len(e) > 1 else np.ones(1) for e in episodes]
            )
        ).float()
        optimizer = torch.optim.Adam(self.parameters(), lr=learning_rate)
        loss = torch.zeros(())
        for _ in range(steps):
            index = torch.randint(0, obs.shape[0], (batch_size,), generator=generator)
            loss = nn.functional.mse_loss(self(obs[index]), target[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            return float(nn.functional.mse_loss(self(obs), target))
