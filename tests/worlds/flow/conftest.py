"""A small pretrained flow shared by the flow world's tests (trained once per session)."""

from __future__ import annotations

import pytest

from densereward.worlds.flow.world import FlowSetup, FlowWorld

WORLD = FlowWorld(prompts=4, steps=6, hidden=32, pretrain_steps=300, evaluation_samples=8)


@pytest.fixture(scope="session")
def flow_setup() -> FlowSetup:
    return WORLD.setup(0)
