"""Return predictors for return decomposition (RUDDER; SPA-RL)."""

from __future__ import annotations

from torch import Tensor, nn

from densereward.models.networks import make_encoder


class ReturnPredictor(nn.Module):
    """``g(tau_{0:t})``: the episode's return predicted from its first ``t + 1`` observations.

    An observation encoder, a GRU over the episode, and a linear head; trained so that the
    prediction at *every* prefix matches the final return (RUDDER's auxiliary-task form), so that
    prediction differences ``g_t - g_{t-1}`` mark the steps that changed the expected outcome.
    """

    def __init__(self, obs_shape: tuple[int, ...], hidden: int = 64) -> None:
        super().__init__()
        self.encoder = make_encoder(obs_shape)
        self.rnn = nn.GRU(self.encoder.size, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, obs: Tensor) -> Tensor:
        """``[episodes, time, *obs_shape] -> [episodes, time]`` prefix predictions."""
        episodes, time = obs.shape[:2]
        features = self.encoder(obs.reshape(episodes * time, *obs.shape[2:])).reshape(
            episodes, time, -1
        )
        hidden, _ = self.rnn(features)
        return self.head(hidden).squeeze(-1)
