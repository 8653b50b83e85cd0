"""The registry: contracts checked when a class registers, one typed-config loader."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from densereward.core.components import Needs, Signal, SignalContext, Transform
from densereward.core.errors import ConfigError
from densereward.core.registry import build, build_config, register, unregister


def test_a_component_must_subclass_the_protocol_of_its_kind() -> None:
    @dataclass(frozen=True)
    class Loose:
        def __call__(self, batch, iteration=0):
            return batch

    with pytest.raises(TypeError, match=r"must subclass densereward\.core\.components\.Transform"):
        register("transform", "test_loose")(Loose)


def test_a_signal_must_define_call_or_bind() -> None:
    @dataclass(frozen=True)
    class Mute(Signal):
        scale: float = 1.0

    with pytest.raises(TypeError, match="must define __call__ or bind"):
        register("signal", "test_mute")(Mute)

    @dataclass(frozen=True)
    class Bound(Signal):
        def bind(self, context: SignalContext):
            return lambda batch, name: batch

    try:
        register("signal", "test_bound")(Bound)
        assert build("signal", {"kind": "test_bound"}).needs() == Needs()
    finally:
        unregister("signal", "test_bound")


@dataclass(frozen=True)
class Sizes:
    count: int = 1
    rate: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError("count", f"must be at least 1, got {self.count}")


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"count": 0}, r"^trainer\.count: must be at least 1, got 0$"),
        ({"cuont": 2}, r"^trainer\.cuont: unknown SIZES parameter \(known: count, rate\)$"),
        ({"rate": "fast"}, r"^trainer\.rate: expected a number, got str 'fast'$"),
        ({"seed": 3}, r"^trainer\.seed: unknown SIZES parameter"),
    ],
)
def test_build_config_names_the_field_under_its_path(given, message) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(Sizes, given, "trainer", "SIZES", hidden=("seed",))
    assert build_config(Sizes, {"count": 2, "rate": 1}, "trainer", "SIZES") == Sizes(2, 1.0)


def test_a_transform_registered_by_its_protocol_builds_from_a_spec() -> None:
    @dataclass(frozen=True)
    class Identity(Transform):
        factor: float = 1.0

        def __call__(self, batch, iteration=0):
            return batch

    try:
        register("transform", "test_identity")(Identity)
        assert build("transform", {"kind": "test_identity", "factor": 2}).factor == 2.0
    finally:
        unregister("transform", "test_identity")
