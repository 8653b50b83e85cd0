"""The contracts: what a signal, a transform, an estimator and a world are.

Each is a ``typing.Protocol``. Registered components subclass the protocol of their kind
explicitly (the registry refuses a class that does not), which gives them the defaults written
here and makes every capability a declared attribute or method rather than something probed for:

- a **signal** says what it ``needs`` of its context (named models, demonstrations, captions,
  a tokenizer and text format) and is ``bind``-ed to that context once, which returns the ready
  callable ``(batch, name) -> batch``; a signal that needs nothing binds to itself;
- a **transform** is ``(batch, iteration) -> batch``;
- an **estimator** is ``batch -> Estimate`` and declares ``selects_trajectories``;
- a **world** owns its config (its dataclass fields), its trainers and their budget, its
  progress axis, how it sets up a seed, trains one method, evaluates a policy, and the part of
  the run report that is its own.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Zeros(Signal):
...     '''Writes zeros.'''
...     def __call__(self, batch, name):
...         return batch.with_steps(**{name: batch.offsets.new_zeros(batch.num_steps).double()})
>>> Zeros().needs(), Zeros().bind(SignalContext()) == Zeros()
(Needs(models=(), demonstrations=False, captions=False, text=False), True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
from torch import Tensor

from densereward.core.errors import ConfigError
from densereward.core.trajectories import Trajectories


@dataclass(frozen=True)
class TextFormat:
    """How a language world writes a response: every step ends with ``step_tag``, and the final
    answer follows ``answer_mark`` (``3+4=7ки7*2=14ки#14``)."""

    step_tag: str
    answer_mark: str


@dataclass(frozen=True)
class Needs:
    """What a signal needs from its context, or what a world offers (``World.offers``)."""

    models: tuple[str, ...] = ()
    """Named models: ``policy``, ``reference``, a world's trained reward models (``prm_mc``...)."""
    demonstrations: bool = False
    """Successful episodes' observations (``SignalContext.demonstrations``)."""
    captions: bool = False
    """A captioner of observations (``SignalContext.captions``)."""
    text: bool = False
    """A tokenizer and the world's ``TextFormat``."""

    def unmet(self, offers: Needs, offerer: str = "this world") -> str | None:
        """Why ``offers`` does not satisfy these needs, or ``None`` when it does; ``offerer``
        names who offers (a world, or the models a user passed)."""
        missing = [name for name in self.models if name not in offers.models]
        if missing:
            known = ", ".join(offers.models) or "none"
            return f"needs model {missing[0]!r}, which {offerer} does not offer (offers: {known})"
        for flag in ("demonstrations", "captions", "text"):
            if getattr(self, flag) and not getattr(offers, flag):
                return f"needs {_NEED_WORDS[flag]}, which {offerer} does not offer"
        return None


_NEED_WORDS = {
    "demonstrations": "demonstrations",
    "captions": "captions of observations",
    "text": "a tokenizer and a text format",
}


@dataclass(frozen=True)
class SignalContext:
    """What a world hands its signals when they are bound: the run's seed and what it offers.

    ``demonstrations(n)`` returns ``n`` successful episodes' observations (one array each);
    ``captions(observations)`` one caption per observation; ``models`` maps names to the
    objects signals refer to by name in a recipe (``policy``: the live causal LM being trained,
    ``reference``: its frozen start, trained PRMs); ``tokenizer`` and ``text_format`` are how the
    world's language models read and write.
    """

    seed: int = 0
    demonstrations: Callable[[int], list[np.ndarray]] | None = None
    captions: Callable[[np.ndarray], list[str]] | None = None
    models: Mapping[str, Any] = field(default_factory=dict)
    tokenizer: Any = None
    text_format: TextFormat | None = None

    def model(self, name: str, signal: str) -> Any:
        """The model named ``name``, or a ``ConfigError`` naming ``signal`` and what is offered."""
        if name not in self.models:
            known = ", ".join(sorted(self.models)) or "none"
            raise ConfigError(f"signals.{signal}", f"needs model {name!r}; offered: {known}")
        return self.models[name]

    def with_models(self, **models: Any) -> SignalContext:
        return dataclasses.replace(self, models={**self.models, **models})

    def require_text(self, signal: str) -> tuple[Any, TextFormat]:
        """The tokenizer and text format, or a ``ConfigError`` naming ``signal``."""
        if self.tokenizer is None or self.text_format is None:
            raise ConfigError(f"signals.{signal}", "needs a tokenizer and a text format")
        return self.tokenizer, self.text_format


class BoundSignal(Protocol):
    """A signal ready to run: writes step column ``name`` (and maybe others) onto the batch."""

    def __call__(self, batch: Trajectories, name: str) -> Trajectories: ...


class Signal(Protocol):
    """A source of step rewards, as a recipe names it (its fields are its parameters)."""

    def needs(self) -> Needs:
        """What ``bind`` will ask of its context; checked when a run recipe loads."""
        return Needs()

    def bind(self, context: SignalContext) -> BoundSignal:
        """The signal ready to run in ``context``, prepared once (models looked up, fitted on
        demonstrations...). One that needs no preparation defines ``__call__`` and is its own
        bound form (the registry checks that a signal class does one or the other)."""
        return self  # type: ignore[return-value]


class Transform(Protocol):
    """Reward shaping, redistribution or safeguard: a batch in, a batch with new columns out."""

    def __call__(self, batch: Trajectories, iteration: int = 0) -> Trajectories: ...


@dataclass(frozen=True)
class Estimate:
    """Per-step advantages and returns (value targets), both ``[num_steps]``; ``keep``, from an
    estimator that selects trajectories (PROF), marks those the policy loss should see
    (``[num_trajectories]`` bool; ``None`` keeps all)."""

    advantages: Tensor
    returns: Tensor
    keep: Tensor | None = None


class Estimator(Protocol):
    """Advantages and returns from a batch of rewards."""

    selects_trajectories: ClassVar[bool] = False
    """Whether it may say which trajectories the policy loss sees (``Estimate.keep``); only
    worlds whose trainer honours that (``World.trains_on_selection``) accept such estimators."""

    def __call__(self, batch: Trajectories) -> Estimate: ...


# ----------------------------------------------------------------------------- worlds
@dataclass(frozen=True)
class Axis:
    """The x-axis of a world's curves: a metrics column that grows with the training budget."""

    column: str
    """e.g. ``env_steps`` or ``samples``"""
    label: str
    """e.g. ``environment steps``"""


@dataclass(frozen=True)
class Plot:
    """One picture of a run folder: ``metric`` against the world's progress axis."""

    metric: str
    label: str
    file: str
    smooth: int = 1
    """Trailing NaN-aware mean over this many points before averaging over seeds (1: none)."""
    bounded: bool = False
    """The metric is a rate in [0, 1]: the spread band is clipped to it."""


@dataclass(frozen=True)
class Trained:
    """One method trained on one seed: one metrics row per update, the policy, and the world's
    held-out evaluation of it."""

    metrics: list[dict[str, Any]]
    policy: Any
    """A ``torch.nn.Module``; its ``state_dict`` is the run's checkpoint."""
    evaluation: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RunResults:
    """Everything a world's report section reads: rows carry ``method`` and ``seed`` columns."""

    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    rows: list[dict[str, Any]]
    evaluations: list[dict[str, Any]]
    """One row per (method, seed): the world's ``evaluate`` of the trained policy."""
    seconds: Mapping[tuple[str, int], float]
    budget: int
    wall: float

    def run(self, method: str, seed: int, metric: str | None = None) -> list[dict[str, Any]]:
        """The rows of one (method, seed), in order; only those with ``metric`` when given."""
        return [
            row
            for row in self.rows
            if row["method"] == method
            and row["seed"] == seed
            and (metric is None or row.get(metric) is not None)
        ]


class TrainerConfig(Protocol):
    """A trainer's typed config: ``length`` names the field ``densereward run --steps`` sets;
    ``estimator`` is the estimator spec a run recipe's methods get when they name none."""

    length: ClassVar[str]
    estimator: ClassVar[Mapping[str, Any]]
    seed: int


class World(Protocol):
    """An environment family with its trainer, behind which ``densereward run`` stays generic.

    The world's dataclass fields are its parameters (the recipe's ``world:`` section). A run
    recipe names one trainer of ``trainers`` (``trainer: {kind: ...}``); the executor calls
    ``setup(seed)`` once per unit of work and ``train`` once per method in it; the report asks
    ``report`` for the world's section and draws its ``plots``.
    """

    trainers: ClassVar[Mapping[str, type]]
    """Trainer kind -> its config dataclass; the first is the default."""
    progress: ClassVar[Axis]
    plots: ClassVar[Sequence[Plot]]
    trains_on_selection: ClassVar[bool] = False
    """Its trainer masks the trajectories a selecting estimator drops (GRPO does, PPO does not)."""
    shares_setup: ClassVar[bool] = False
    """The methods of one seed share one ``setup`` (an SFT policy, reward models): they run as
    one unit of work per seed. Otherwise each (method, seed) is its own unit, run in parallel."""
    commands: ClassVar[Mapping[str, Callable[..., None]]] = {}
    """Extra ``densereward`` sub-commands (Typer-annotated functions) the world contributes."""

    def label(self) -> str:
        """A short description for titles: the environment id, the task mix and model..."""
        ...

    def offers(self) -> Needs:
        """What the signals of its methods may need (checked when a run recipe loads)."""
        return Needs()

    def trainer_defaults(self) -> Mapping[str, Any]:
        """Trainer parameters the world sets where the recipe leaves them out."""
        return {}

    def check(self, trainer: Any) -> None:
        """Reject a trainer config that does not fit this world (a ``ConfigError``)."""
        return None

    def budget(self, trainer: Any) -> int:
        """Units of the progress axis one run consumes."""
        ...

    def setup(self, seed: int) -> Any:
        """What the methods of one seed start from (built once per unit of work)."""
        ...

    def train(
        self, setup: Any, trainer: Any, recipe: Any, progress: Callable[[int], None]
    ) -> Trained:
        """Train one method (a ``Recipe``) from ``setup`` with ``trainer`` (its seed already the
        run's); ``progress`` gets the axis value as training goes; the result carries the
        world's ``evaluate`` of the trained policy."""
        ...

    def evaluate(self, setup: Any, policy: Any) -> dict[str, float]:
        """Held-out evaluation of a trained policy."""
        ...

    def report(self, results: RunResults) -> str:
        """The world's section of ``report.md`` (Markdown; may show ``plots`` by file name)."""
        ...


__all__ = [
    "Axis",
    "BoundSignal",
    "Estimate",
    "Estimator",
    "Needs",
    "Plot",
    "RunResults",
    "Signal",
    "SignalContext",
    "TextFormat",
    "Trained",
    "TrainerConfig",
    "Transform",
    "World",
]
