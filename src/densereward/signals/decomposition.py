"""Return decomposition online: a return predictor retrained as the policy improves."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch

from densereward.core.components import Signal, SignalContext
from densereward.core.layouts import pad_segments
from densereward.core.parameters import Count, Positive
from densereward.core.registry import register
from densereward.core.returns import trajectory_scores
from densereward.core.segments import Segments
from densereward.core.trajectories import Trajectories
from densereward.models.return_predictor import ReturnPredictor


@register("signal", "return_decomposition", paper="RUDDER (Arjona-Medina et al. 2019); SPA-RL")
@dataclass(frozen=True)
class ReturnDecompositionSignal(Signal):
    """Writes ``<name>[t] = g(tau_{0:t})``, a GRU's prediction of the episode return from its prefix.

    Each call first trains the predictor for ``train_steps`` minibatches on the most recent
    ``replay`` completed episodes (terminated or truncated; their return ``outcome + sum_t r_t`` of
    the ``source`` column is known), then predicts every prefix of the batch. Pair it with the
    ``return_decomposition`` transform, which turns the predictions into rewards
    ``g_t - g_{t-1}`` with the exact-sum correction and, through its ``max_error`` quality gate,
    keeps the sparse reward wherever the predictor is still wrong.
    """

    source: str = "reward"
    hidden: Count = 64
    train_steps: Count = 20
    batch_size: Count = 32
    replay: Count = 256
    learning_rate: Positive = 1e-3

    def bind(self, context: SignalContext) -> OnlineReturnPredictor:
        torch.manual_seed(context.seed)
        return OnlineReturnPredictor(self)


@dataclass
class OnlineReturnPredictor:
    """``ReturnDecompositionSignal`` bound: the predictor (made at the first batch, when the
    observation shape is known), its optimiser and the replay of completed episodes."""

    spec: ReturnDecompositionSignal
    model: ReturnPredictor | None = None
    optimizer: torch.optim.Optimizer | None = None
    memory: deque = field(default_factory=deque)
    last_loss: float = float("nan")

    def __call__(self, batch: Trajectories, name: str) -> Trajectories:
        obs = batch.step("obs")
        if self.model is None:
            self.model = ReturnPredictor(tuple(obs.shape[1:]), self.spec.hidden)
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.spec.learning_rate)
            self.memory = deque(maxlen=self.spec.replay)
        returns = trajectory_scores(batch, self.spec.source).float()
        complete = batch.terminated | batch.truncated
        episodes = list(torch.split(obs, batch.lengths.tolist()))
        for i in torch.nonzero(complete).squeeze(1).tolist():
            self.memory.append((episodes[i], returns[i]))
        if self.memory:
            self._train()
        rows, mask = pad_segments(obs, batch.segments)
        with torch.no_grad():
            predictions = self.model(rows)[mask].double()
        return batch.with_steps(**{name: predictions})

    def _train(self) -> None:
        assert self.model is not None and self.optimizer is not None
        generator = torch.Generator().manual_seed(len(self.memory))
        for _ in range(self.spec.train_steps):
            chosen = torch.randint(
                0,
                len(self.memory),
                (min(self.spec.batch_size, len(self.memory)),),
                generator=generator,
            )
            sample = [self.memory[i] for i in chosen.tolist()]
            lengths = torch.tensor([len(o) for o, _ in sample])
            offsets = torch.zeros(len(sample) + 1, dtype=torch.int64)
            torch.cumsum(lengths, 0, out=offsets[1:])
            rows, mask = pad_segments(torch.cat([o for o, _ in sample]), Segments(offsets))
            target = torch.stack([g for _, g in sample])[:, None].expand_as(mask)
            loss = ((self.model(rows) - target) ** 2)[mask].mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.last_loss = float(loss.detach())
