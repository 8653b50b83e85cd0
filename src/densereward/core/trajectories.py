"""``Trajectories``: a batch of variable-length episodes stored flat (columnar, CSR offsets).

Per step: named columns of shape ``[num_steps, ...]`` (rewards, values, PRM scores, ...), optional
``token_spans`` (the ``[start, end)`` tokens of each step inside its trajectory's response) and an
optional tree (``parent`` per step). Per trajectory: named columns of shape
``[num_trajectories, ...]``; the well-known ones are ``outcome``, ``verdict``, ``group``,
``terminated`` and ``truncated``. ``outcome`` is a *reward* (transforms may move it into the
steps and zero it); ``verdict`` is the grader's *judgement* of the trajectory (1.0 correct, 0.0
not), which no pipeline stage may change once it is there: trainers log accuracy from it and
safeguards (``gate``, ``trust``) read it. Text (prompts, step strings) rides along in ``text`` / ``step_text``.

Columns are ``torch.Tensor`` on any device and of any dtype; NumPy arrays are wrapped without a
copy. Construction validates everything once (this is the edge of the library); methods that
derive a new batch from a valid one (``with_steps``...) only check shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import Tensor

from densereward.core.errors import ValidationError
from densereward.core.segments import Groups, Segments

ArrayLike = Tensor | np.ndarray | Sequence[Any]

OUTCOME = "outcome"
VERDICT = "verdict"
GROUP = "group"
TERMINATED = "terminated"
TRUNCATED = "truncated"


def as_tensor(value: ArrayLike, name: str, device: torch.device | None = None) -> Tensor:
    """Wrap ``value`` as a tensor without copying when it already is one or is a NumPy array."""
    if isinstance(value, Tensor):
        return value if device is None else value.to(device)
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:
        raise ValidationError(name, f"cannot be read as an array ({error})") from None
    if array.dtype == object or array.dtype.kind in "USV":
        raise ValidationError(name, f"expected numbers, got values of type {array.dtype}")
    return torch.as_tensor(array, device=device)


def _first_bad(values: Tensor) -> int | None:
    """Flat index of the first non-finite entry of a floating tensor (row index for 2-D)."""
    if not values.is_floating_point():
        return None
    bad = ~torch.isfinite(values)
    if values.ndim > 1:
        bad = bad.flatten(1).any(1)
    if not bool(bad.any()):
        return None
    return int(torch.nonzero(bad)[0, 0])


def _describe(values: Tensor, index: int) -> str:
    value = values[index]
    value = value if value.ndim == 0 else value.flatten()[~torch.isfinite(value.flatten())][0]
    return "NaN" if bool(torch.isnan(value)) else str(float(value))


@dataclass(frozen=True, eq=False)
class Trajectories:
    """A ragged batch of episodes. See the module docstring for the layout.

    >>> batch = Trajectories.from_episodes(
    ...     steps={"reward": [[0.0, 1.0], [0.5]]}, episodes={"outcome": [1.0, 0.0], "group": [0, 0]}
    ... )
    >>> len(batch), batch.num_steps, batch.lengths.tolist()
    (2, 3, [2, 1])
    """

    offsets: Tensor
    steps: Mapping[str, Tensor] = field(default_factory=dict)
    episodes: Mapping[str, Tensor] = field(default_factory=dict)
    token_spans: Tensor | None = None
    parent: Tensor | None = None
    text: Mapping[str, Sequence[str]] = field(default_factory=dict)
    step_text: Mapping[str, Sequence[str]] = field(default_factory=dict)
    trusted: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "offsets", as_tensor(self.offsets, "offsets"))
        device = self.offsets.device
        object.__setattr__(
            self, "steps", {k: as_tensor(v, f"steps.{k}", device) for k, v in self.steps.items()}
        )
        object.__setattr__(
            self,
            "episodes",
            {k: as_tensor(v, k, device) for k, v in self.episodes.items()},
        )
        if self.token_spans is not None:
            object.__setattr__(
                self, "token_spans", as_tensor(self.token_spans, "token_spans", device)
            )
        if self.parent is not None:
            object.__setattr__(self, "parent", as_tensor(self.parent, "parent", device))
        object.__setattr__(self, "text", {k: list(v) for k, v in self.text.items()})
        object.__setattr__(self, "step_text", {k: list(v) for k, v in self.step_text.items()})
        self._check_shapes()
        if not self.trusted:
            self._check_values()

    # ----------------------------------------------------------------- validation
    def _check_shapes(self) -> None:
        offsets = self.offsets
        if offsets.ndim != 1 or offsets.shape[0] < 1:
            raise ValidationError("offsets", "must be a 1-D array of length num_trajectories + 1")
        if offsets.dtype not in (torch.int64, torch.int32):
            raise ValidationError("offsets", f"must be integers, got {offsets.dtype}")
        if offsets.dtype != torch.int64:
            object.__setattr__(self, "offsets", offsets.to(torch.int64))
        n, b = int(self.offsets[-1]), self.offsets.shape[0] - 1
        for name, column in self.steps.items():
            if column.ndim == 0 or column.shape[0] != n:
                got = "a scalar" if column.ndim == 0 else f"{column.shape[0]} rows"
                raise ValidationError(f"steps.{name}", f"has {got}, expected one per step ({n})")
        for name, column in self.episodes.items():
            if column.ndim == 0 or column.shape[0] != b:
                got = "a scalar" if column.ndim == 0 else f"{column.shape[0]} rows"
                raise ValidationError(name, f"has {got}, expected one per trajectory ({b})")
        if self.token_spans is not None and tuple(self.token_spans.shape) != (n, 2):
            raise ValidationError(
                "token_spans", f"must have shape [{n}, 2], got {list(self.token_spans.shape)}"
            )
        if self.parent is not None and tuple(self.parent.shape) != (n,):
            raise ValidationError("parent", f"must have shape [{n}], got {list(self.parent.shape)}")
        for name, strings in self.text.items():
            if len(strings) != b:
                raise ValidationError(name, f"has {len(strings)} texts, expected {b}")
        for name, strings in self.step_text.items():
            if len(strings) != n:
                raise ValidationError(f"steps.{name}", f"has {len(strings)} texts, expected {n}")

    def locate(self, flat_index: int) -> tuple[int, int]:
        """``(trajectory, step)`` of the step at ``flat_index`` in the flat step columns."""
        trajectory = int(torch.searchsorted(self.offsets, flat_index, right=True)) - 1
        return trajectory, flat_index - int(self.offsets[trajectory])

    def _check_values(self) -> None:
        offsets = self.offsets
        if int(offsets[0]) != 0:
            raise ValidationError("offsets", f"must start at 0, got {int(offsets[0])}")
        lengths = offsets[1:] - offsets[:-1]
        if bool((lengths < 1).any()):
            index = int(torch.nonzero(lengths < 1)[0, 0])
            problem = "has no steps" if int(lengths[index]) == 0 else "offsets decrease"
            raise ValidationError("offsets", problem, trajectory=index)
        for name, column in self.steps.items():
            bad = _first_bad(column)
            if bad is not None:
                trajectory, step = self.locate(bad)
                raise ValidationError(
                    f"steps.{name}",
                    f"{_describe(column, bad)} is not a finite number",
                    trajectory=trajectory,
                    step=step,
                )
        for name, column in self.episodes.items():
            bad = _first_bad(column)
            if bad is not None:
                raise ValidationError(
                    name, f"{_describe(column, bad)} is not a finite number", trajectory=bad
                )
        if GROUP in self.episodes and self.episodes[GROUP].is_floating_point():
            raise ValidationError(GROUP, "must be integers")
        if OUTCOME in self.episodes and not self.episodes[OUTCOME].is_floating_point():
            # An integer or boolean outcome (0/1 correctness) is a reward: make it one.
            self.episodes[OUTCOME] = self.episodes[OUTCOME].to(torch.get_default_dtype())  # type: ignore[index]
        if VERDICT in self.episodes:
            verdict = self.episodes[VERDICT]
            if not verdict.is_floating_point():
                verdict = verdict.to(torch.get_default_dtype())
            outside = (verdict < 0) | (verdict > 1)
            if bool(outside.any()):
                raise ValidationError(
                    VERDICT,
                    "must lie in [0, 1] (1 correct, 0 not)",
                    trajectory=int(torch.nonzero(outside)[0, 0]),
                )
            self.episodes[VERDICT] = verdict  # type: ignore[index]
        for flag in (TERMINATED, TRUNCATED):
            if flag in self.episodes and self.episodes[flag].dtype != torch.bool:
                column = self.episodes[flag]
                if bool(((column != 0) & (column != 1)).any()):
                    raise ValidationError(flag, "must be true/false")
                self.episodes[flag] = column.to(torch.bool)  # type: ignore[index]
        if TERMINATED in self.episodes and TRUNCATED in self.episodes:
            both = self.episodes[TERMINATED] & self.episodes[TRUNCATED]
            if bool(both.any()):
                raise ValidationError(
                    TRUNCATED,
                    "an episode cannot be both terminated and truncated",
                    trajectory=int(torch.nonzero(both)[0, 0]),
                )
        if self.token_spans is not None:
            self._check_token_spans()
        if self.parent is not None:
            self._check_parent()

    def _check_token_spans(self) -> None:
        spans = self.token_spans
        assert spans is not None
        start, end = spans[:, 0], spans[:, 1]
        previous_end = torch.roll(end, 1).masked_fill(self.segments.positions == 0, 0)
        bad = (start < previous_end) | (end <= start)
        if bool(bad.any()):
            trajectory, step = self.locate(int(torch.nonzero(bad)[0, 0]))
            raise ValidationError(
                "token_spans",
                "spans must be non-empty, in order and not overlap",
                trajectory=trajectory,
                step=step,
            )

    def _check_parent(self) -> None:
        parent = self.parent
        assert parent is not None
        index = torch.arange(self.num_steps, device=parent.device)
        first = self.segments.positions == 0
        # A trajectory stores only the steps it added to the tree: inside its segment the path is
        # contiguous, and its first step hangs off an earlier step (or is a root). Parents always
        # precede children, which makes the tree acyclic by construction.
        good = torch.where(
            first,
            (parent >= -1) & (parent < self.offsets[:-1][self.segments.ids]),
            parent == index - 1,
        )
        if not bool(good.all()):
            trajectory, step = self.locate(int(torch.nonzero(~good)[0, 0]))
            raise ValidationError(
                "parent",
                "a step's parent must be the previous step of its trajectory, or for "
                "its first step an earlier step or -1",
                trajectory=trajectory,
                step=step,
            )

    # ----------------------------------------------------------------- views
    def __len__(self) -> int:
        return self.offsets.shape[0] - 1

    @property
    def num_steps(self) -> int:
        return self.segments.total

    @property
    def device(self) -> torch.device:
        return self.offsets.device

    @cached_property
    def segments(self) -> Segments:
        return Segments(self.offsets)

    @property
    def lengths(self) -> Tensor:
        return self.segments.lengths

    @cached_property
    def groups(self) -> Groups:
        """Trajectory groups (same prompt / same start state); each trajectory alone if no ``group``."""
        if GROUP in self.episodes:
            return Groups.from_labels(self.episodes[GROUP])
        return Groups(torch.arange(len(self), device=self.device), len(self))

    @property
    def outcome(self) -> Tensor | None:
        return self.episodes.get(OUTCOME)

    @property
    def verdict(self) -> Tensor | None:
        return self.episodes.get(VERDICT)

    @property
    def terminated(self) -> Tensor:
        """Per trajectory; defaults to all true (a finished response or episode)."""
        if TERMINATED in self.episodes:
            return self.episodes[TERMINATED]
        if TRUNCATED in self.episodes:
            return ~self.episodes[TRUNCATED]
        return torch.ones(len(self), dtype=torch.bool, device=self.device)

    @property
    def truncated(self) -> Tensor:
        if TRUNCATED in self.episodes:
            return self.episodes[TRUNCATED]
        return torch.zeros(len(self), dtype=torch.bool, device=self.device)

    def step(self, name: str) -> Tensor:
        """A step column by name, with an error that lists what exists."""
        if name not in self.steps:
            known = ", ".join(sorted(self.steps)) or "none"
            raise ValidationError(f"steps.{name}", f"no such step column (have: {known})")
        return self.steps[name]

    def episode(self, name: str) -> Tensor:
        """A per-trajectory column by name, with an error that lists what exists."""
        if name not in self.episodes:
            known = ", ".join(sorted(self.episodes)) or "none"
            raise ValidationError(name, f"no such per-trajectory column (have: {known})")
        return self.episodes[name]

    def with_steps(self, **columns: Tensor) -> Trajectories:
        """A new batch sharing everything with this one, plus (or replacing) step columns."""
        return self._derive(steps={**self.steps, **columns})

    def with_episodes(self, **columns: Tensor) -> Trajectories:
        return self._derive(episodes={**self.episodes, **columns})

    def _derive(self, **changes: Any) -> Trajectories:
        fields = {
            "offsets": self.offsets,
            "steps": self.steps,
            "episodes": self.episodes,
            "token_spans": self.token_spans,
            "parent": self.parent,
            "text": self.text,
            "step_text": self.step_text,
            "trusted": True,
        }
        derived = Trajectories(**{**fields, **changes})
        # The derived batch has the same boundaries: share the cached index tensors.
        derived.__dict__["segments"] = self.segments
        if "episodes" not in changes:
            derived.__dict__.pop("groups", None)
            if "groups" in self.__dict__:
                derived.__dict__["groups"] = self.groups
        return derived

    def to(self, device: torch.device | str) -> Trajectories:
        """The same batch with every tensor on ``device``."""

        def move(tensor: Tensor | None) -> Tensor | None:
            return None if tensor is None else tensor.to(device)

        return Trajectories(
            self.offsets.to(device),
            {k: v.to(device) for k, v in self.steps.items()},
            {k: v.to(device) for k, v in self.episodes.items()},
            move(self.token_spans),
            move(self.parent),
            self.text,
            self.step_text,
            trusted=True,
        )

    # ----------------------------------------------------------------- list-of-episodes layout
    @staticmethod
    def from_episodes(
        steps: Mapping[str, Sequence[ArrayLike]],
        episodes: Mapping[str, ArrayLike] | None = None,
        token_spans: Sequence[ArrayLike] | None = None,
        parent: Sequence[ArrayLike] | None = None,
        text: Mapping[str, Sequence[str]] | None = None,
        step_text: Mapping[str, Sequence[Sequence[str]]] | None = None,
    ) -> Trajectories:
        """Build from one array per episode for each step column (the list-of-episodes layout)."""
        if not steps:
            raise ValidationError("steps", "at least one step column is needed to know the lengths")
        names = list(steps)
        first = [as_tensor(e, f"steps.{names[0]}") for e in steps[names[0]]]
        lengths = [int(e.shape[0]) if e.ndim else -1 for e in first]
        columns: dict[str, Tensor] = {}
        for name in names:
            episodes_of = steps[name]
            if len(episodes_of) != len(lengths):
                raise ValidationError(
                    f"steps.{name}", f"has {len(episodes_of)} episodes, expected {len(lengths)}"
                )
            parts = [as_tensor(e, f"steps.{name}") for e in episodes_of]
            for i, part in enumerate(parts):
                if part.ndim == 0 or part.shape[0] != lengths[i]:
                    got = "a scalar" if part.ndim == 0 else str(part.shape[0])
                    raise ValidationError(
                        f"steps.{name}",
                        f"has length {got}, but steps.{names[0]} has {lengths[i]}",
                        trajectory=i,
                    )
            columns[name] = torch.cat(parts) if parts else torch.zeros(0)
        offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int64), 0)

        def stack(parts: Sequence[ArrayLike] | None, name: str) -> Tensor | None:
            if parts is None:
                return None
            tensors = [as_tensor(p, name) for p in parts]
            for i, part in enumerate(tensors):
                if part.ndim == 0 or part.shape[0] != lengths[i]:
                    raise ValidationError(
                        name, f"needs one entry per step ({lengths[i]})", trajectory=i
                    )
            return torch.cat(tensors).to(torch.int64)

        flat_step_text = {
            k: [s for episode in v for s in episode] for k, v in (step_text or {}).items()
        }
        return Trajectories(
            offsets,
            columns,
            {name: as_tensor(values, name) for name, values in (episodes or {}).items()},
            stack(token_spans, "token_spans"),
            stack(parent, "parent"),
            dict(text or {}),
            flat_step_text,
        )

    def to_episodes(self, name: str) -> list[Tensor]:
        """One tensor per episode for a step column (views into the flat column, no copy)."""
        return list(torch.split(self.step(name), self.lengths.tolist()))
