"""A process reward model trained online on the policy's own samples, with a held-out guard.

An offline PRM is trained on one policy's samples (the SFT policy's) and then read on another's
(the RL policy's, which moves away from them): its scores are off distribution exactly where the
policy goes. PRIME (Cui et al. 2025), Cooper and co-evolving SPARK keep the reward model up with
the policy by updating it during RL on the policy's fresh rollouts, labelled by the verifier.

Per call (one RL iteration), in this order:

1. **score** the batch with the current model: step ``t``'s reward is ``σ(w·h_t + b)`` at its
   step end, as with ``prm`` — the model has not seen these samples, so the reward is a
   prediction, never the batch's own labels read back;
2. **split** the batch's groups: a fraction ``holdout`` of them (whole groups, so no sibling of
   a held-out response is trained on) joins the held-out buffer, the rest the replay buffer
   (each the last ``replay`` batches);
3. every ``every`` iterations, **update**: ``epochs`` passes of step-wise BCE over the replay
   buffer, ``L(φ) = −Σ_t [y_t log σ(s_φ(t)) + (1 − y_t) log(1 − σ(s_φ(t)))]``, then the
   **guard**: the update is kept only if the held-out BCE did not rise
   (``L_held(φ_new) ≤ L_held(φ_old) + tolerance``); otherwise the model and its optimiser's
   moments go back to where they were, so the policy is never rewarded by a model that got
   worse on labels it never trained on. Nor by one that knows nothing yet: while the held-out
   BCE is no lower than that of the labels' base rate predicted everywhere, every step scores
   0.5 (``require_informative``), so the process advantage is zero and only the outcome counts.

Labels ``y_t`` (``labels``): a step column the verifier wrote (the reasoning world's ``label``:
exact first-error labels, 1 until the first wrong step and 0 from it on) or ``outcome``: the
trajectory's verified outcome at every step, which makes ``σ(s_φ(t))`` a model of
``P(correct | prefix)`` under the current policy (each rollout is a one-sample Monte-Carlo label
of all its prefixes). ``supervise: last`` trains at the last step only: an outcome reward model
(ORM), still read at every step end.

The model starts from the context's model named ``model``: a ``ProcessRewardModel`` (an offline
PRM, copied) or a causal LM (``reference``: the frozen start of the policy), which gets a fresh
zero head (every score 0.5 until the first accepted update). ``history`` keeps, per update, the
held-out losses before and after and whether it was kept; the per-trajectory columns
``<name>_kept`` and ``<name>_heldout_loss`` carry the latest to the pipeline's diagnostics.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from densereward.core.components import Needs, Signal, SignalContext
from densereward.core.errors import ConfigError, ValidationError
from densereward.core.parameters import Count, NonNegative, Positive, Unit
from densereward.core.registry import register
from densereward.core.trajectories import Trajectories
from densereward.models.language import Rows, step_end_positions, trajectories_to_rows
from densereward.models.prm import ProcessRewardModel, step_bce, train_prm

OUTCOME_LABELS = "outcome"


@register(
    "signal",
    "online_prm",
    paper="PRIME (Cui et al. 2025); Cooper; SPARK (co-evolving reward models)",
)
@dataclass(frozen=True)
class OnlinePRMSignal(Signal):
    """Step scores of a PRM updated during RL on the policy's samples, behind a held-out guard."""

    model: str = "reference"
    """the starting point: a PRM (copied) or a causal LM (a fresh head on a copy)"""
    labels: str = "label"
    """the step column holding the verifier's step labels, or ``outcome``"""
    supervise: Literal["steps", "last"] = "steps"
    """train at every step end (a PRM) or at the last only (an outcome reward model)"""
    every: Count = 1
    """iterations between updates"""
    replay: Count = 4
    """batches kept for training (and, separately, for the held-out check)"""
    epochs: Count = 1
    """passes over the replay buffer per update"""
    batch_size: Count = 64
    learning_rate: Positive = 5e-4
    holdout: Unit = 0.125
    """the fraction of each batch's groups kept out of training, for the guard"""
    tolerance: NonNegative = 0.0
    """how much the held-out BCE may rise in an update that is still kept"""
    require_informative: bool = True
    """reward 0.5 at every step (no process signal) while the model's held-out BCE is no better
    than the labels' base rate predicted everywhere"""

    def __post_init__(self) -> None:
        if self.holdout >= 1.0:
            raise ConfigError("holdout", "must leave some groups to train on (below 1)")

    def needs(self) -> Needs:
        return Needs(models=(self.model,))

    def bind(self, context: SignalContext) -> OnlinePRM:
        start = context.model(self.model, "online_prm")
        if isinstance(start, ProcessRewardModel):
            prm = copy.deepcopy(start)
        elif hasattr(start, "base_model") and hasattr(start, "config"):
            prm = ProcessRewardModel(start)
        else:
            raise ConfigError(
                "signals.online_prm",
                f"model {self.model!r} is neither a process reward model nor a causal LM",
            )
        for parameter in prm.parameters():  # the start may come frozen
            parameter.requires_grad_(True)
        optimizer = torch.optim.AdamW(prm.parameters(), lr=self.learning_rate, weight_decay=0.0)
        return OnlinePRM(
            self,
            prm.eval(),
            optimizer,
            np.random.default_rng(context.seed),
            deque(maxlen=self.replay),
            deque(maxlen=self.replay),
        )


@dataclass(frozen=True)
class Labelled:
    """Token rows, the ``[S, 2]`` positions read and their labels: one buffer entry."""

    rows: Rows
    positions: Tensor
    labels: Tensor

    def subset(self, row_index: Tensor) -> Labelled:
        """The rows ``row_index`` (sorted) and their positions, renumbered."""
        renumber = torch.full((self.rows.input_ids.shape[0],), -1, dtype=torch.long)
        renumber[row_index] = torch.arange(len(row_index))
        inside = renumber[self.positions[:, 0]] >= 0
        positions = self.positions[inside].clone()
        positions[:, 0] = renumber[positions[:, 0]]
        return Labelled(self.rows.select(row_index), positions, self.labels[inside])


@dataclass
class OnlinePRM:
    """``OnlinePRMSignal`` bound: the model, its optimiser, the split generator, the buffers."""

    spec: OnlinePRMSignal
    prm: ProcessRewardModel
    optimizer: torch.optim.Optimizer
    rng: np.random.Generator
    train_buffer: deque[Labelled]
    held_buffer: deque[Labelled]
    history: list[dict[str, float]] = field(default_factory=list)
    calls: int = 0

    def labelled(self, batch: Trajectories, rows: Rows, positions: Tensor) -> Labelled:
        spec = self.spec
        if spec.labels == OUTCOME_LABELS:
            if batch.outcome is None:
                raise ValidationError(
                    "outcome", "online_prm with labels: outcome needs each trajectory's outcome"
                )
            labels = batch.outcome[batch.segments.ids]
        elif spec.labels in batch.steps:
            labels = batch.step(spec.labels)
        else:
            raise ValidationError(
                spec.labels,
                f"online_prm reads its labels from step column {spec.labels!r}, "
                f"which the batch lacks (steps: {', '.join(sorted(batch.steps)) or 'none'})",
            )
        labels = labels.to(torch.float32)
        bad = torch.nonzero((labels < 0) | (labels > 1) | ~torch.isfinite(labels)).flatten()
        if len(bad):
            step = int(bad[0])
            trajectory = int(batch.segments.ids[step])
            raise ValidationError(
                spec.labels,
                f"online_prm labels must lie in [0, 1], got {float(labels[step])}",
                trajectory=trajectory,
                step=step - int(batch.offsets[trajectory]),
            )
        if spec.supervise == "last":
            last = batch.offsets[1:][batch.lengths > 0] - 1
            positions, labels = positions[last], labels[last]
        return Labelled(rows, positions, labels)

    def split(self, batch: Trajectories, data: Labelled) -> tuple[Labelled, Labelled]:
        """Whole groups held out: ``ceil(holdout · G)`` of the ``G`` groups, drawn afresh."""
        group = batch.groups.index
        count = int(group.max()) + 1 if len(group) else 0
        held_count = min(math.ceil(self.spec.holdout * count), count - 1) if count > 1 else 0
        held_groups = torch.zeros(count, dtype=torch.bool)
        held_groups[torch.as_tensor(self.rng.permutation(count)[:held_count])] = True
        held = held_groups[group]
        return (
            data.subset(torch.nonzero(~held).squeeze(1)),
            data.subset(torch.nonzero(held).squeeze(1)),
        )

    def heldout_loss(self) -> float:
        parts = [part for part in self.held_buffer if len(part.labels)]
        steps = sum(len(p.labels) for p in parts)
        if steps == 0:
            return float("nan")
        total = sum(
            step_bce(self.prm, p.rows, p.positions, p.labels) * len(p.labels) for p in parts
        )
        return total / steps

    def base_rate_loss(self) -> float:
        """The held-out BCE of the best constant: the labels' own mean predicted everywhere."""
        parts = [part.labels for part in self.held_buffer if len(part.labels)]
        if not parts:
            return float("nan")
        labels = torch.cat(parts).double()
        rate = labels.mean().clamp(1e-6, 1 - 1e-6)
        return float(torch.nn.functional.binary_cross_entropy(rate.expand_as(labels), labels))

    def update(self) -> dict[str, float]:
        spec = self.spec
        before = self.heldout_loss()
        saved = copy.deepcopy(self.prm.state_dict()), copy.deepcopy(self.optimizer.state_dict())
        # buffer entries stay apart: their rows have different widths
        parts = [part for part in self.train_buffer if len(part.labels)]
        seed = int(self.rng.integers(2**31))
        for epoch in range(spec.epochs):
            for index in self.rng.permutation(len(parts)):
                part = parts[index]
                train_prm(
                    self.prm,
                    part.rows,
                    part.positions,
                    part.labels,
                    epochs=1,
                    batch_size=spec.batch_size,
                    seed=seed + epoch,
                    optimizer=self.optimizer,
                )
        after = self.heldout_loss()
        kept = math.isnan(before) or after <= before + spec.tolerance
        if not kept:
            self.prm.load_state_dict(saved[0])
            self.optimizer.load_state_dict(saved[1])
        self.prm.eval()
        loss = after if kept else before
        base = self.base_rate_loss()
        return {
            "heldout_before": before,
            "heldout_after": after,
            "kept": float(kept),
            "base_rate": base,
            "informative": float(not math.isfinite(base) or loss < base),
        }

    def __call__(self, batch: Trajectories, name: str) -> Trajectories:
        rows = trajectories_to_rows(batch)
        positions = step_end_positions(batch)
        scores = self.prm.score(rows, positions).to(torch.float64)
        if self.spec.require_informative and self.history and not self.history[-1]["informative"]:
            scores = torch.full_like(scores, 0.5)
        data = self.labelled(batch, rows, positions)
        train, held = self.split(batch, data)
        self.train_buffer.append(train)
        self.held_buffer.append(held)
        record = {"call": float(self.calls)}
        if self.calls % self.spec.every == 0:
            record |= self.update()
            self.history.append(record)
        self.calls += 1
        out = batch.with_steps(**{name: scores})
        if not self.history:
            return out
        latest = self.history[-1]
        ones = torch.ones(len(batch), dtype=torch.float64)
        columns = {
            f"{name}_kept": ones * latest["kept"],
            f"{name}_informative": ones * latest["informative"],
        }
        loss = latest["heldout_after"] if latest["kept"] else latest["heldout_before"]
        if math.isfinite(loss):  # no held-out data (holdout 0): no guard, no loss to show
            columns[f"{name}_heldout_loss"] = ones * loss
        return out.with_episodes(**columns)
