from __future__ import annotations

import numpy as np
import pytest
import torch

from densereward import Trajectories
from densereward.transforms.blending import Blend, alignment


def episodes(rng, aux_sign: float) -> Trajectories:
    # Successful episodes are short; the auxiliary reward tracks (or opposes) the primary return.
    lengths = rng.integers(2, 10, size=32)
    success = rng.random(32) < 0.5
    primary = [
        np.where(np.arange(n) == n - 1, float(s), 0.0)
        for n, s in zip(lengths, success, strict=True)
    ]
    auxiliary = [aux_sign * p + rng.normal(scale=0.05, size=p.size) for p in primary]
    return Trajectories.from_episodes({"reward": primary, "heuristic": auxiliary})


def test_alignment_is_the_correlation_and_none_when_constant() -> None:
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert alignment(x, 2 * x + 1) == pytest.approx(1.0)
    assert alignment(x, -x) == pytest.approx(-1.0)
    assert alignment(torch.zeros(3, dtype=torch.float64), x) is None


@pytest.mark.parametrize(("sign", "expected"), [(1.0, 2.0), (-1.0, 0.0)])
def test_blend_keeps_an_aligned_heuristic_and_switches_off_a_misleading_one(sign, expected) -> None:
    rng = np.random.default_rng(0)
    blend = Blend(initial=1.0, learning_rate=0.5)
    for iteration in range(6):
        batch = episodes(rng, sign)
        out = blend(batch, iteration)
    assert blend.weight == pytest.approx(expected)
    torch.testing.assert_close(
        out.step("reward"), batch.step("reward") + expected * batch.step("heuristic")
    )


def test_blend_weight_does_not_move_without_primary_signal() -> None:
    batch = Trajectories.from_episodes(
        {"reward": [[0.0, 0.0], [0.0]], "heuristic": [[1.0, 0.0], [3.0]]}
    )
    blend = Blend(initial=0.7)
    blend(batch)
    assert blend.history == [0.7]


def test_misleading_heuristic_detects_the_carried_key() -> None:
    from densereward.worlds.control.heuristics import key_bonus, misleading_no_key

    obs = np.zeros((2, 7, 7, 3), dtype=np.uint8)
    obs[0, 3, 6, 0] = 5  # first agent carries a key
    assert key_bonus(None, None, obs, None, None).tolist() == [0.01, 0.0]
    assert misleading_no_key(None, None, obs, None, None).tolist() == [0.0, 0.01]
