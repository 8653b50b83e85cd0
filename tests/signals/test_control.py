from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from densereward import Trajectories
from densereward.signals import CountBonus, ProgressPotential, SignalContext
from densereward.worlds.control.expert import demonstrations


def _batch(obs: np.ndarray) -> Trajectories:
    return Trajectories(torch.tensor([0, obs.shape[0]]), {"obs": torch.from_numpy(obs)})


@given(
    st.lists(st.lists(st.integers(0, 3), min_size=4, max_size=4), min_size=1, max_size=30),
    st.lists(st.lists(st.integers(0, 3), min_size=4, max_size=4), min_size=1, max_size=30),
)
def test_count_bonus_matches_dictionary_counts(first, second) -> None:
    signal = CountBonus(scale=0.5).bind(SignalContext())
    counts: dict[tuple[int, ...], int] = {}
    for rows in (first, second):
        for row in rows:
            counts[tuple(row)] = counts.get(tuple(row), 0) + 1
        bonus = signal(_batch(np.array(rows, dtype=np.uint8)), "bonus").step("bonus").numpy()
        expected = [0.5 / np.sqrt(counts[tuple(row)]) for row in rows]
        np.testing.assert_allclose(bonus, expected, rtol=1e-12)


def test_progress_model_orders_held_out_demonstrations() -> None:
    signal = ProgressPotential(demos=20, fit_steps=300).bind(
        SignalContext(0, lambda n: demonstrations("MiniGrid-DoorKey-5x5-v0", n, 0))
    )
    held_out = demonstrations("MiniGrid-DoorKey-5x5-v0", 10, 5_000)
    correlations = []
    for episode in held_out:
        with torch.no_grad():
            predicted = signal.model(torch.from_numpy(episode)).numpy()
        time = np.arange(len(episode))
        correlations.append(np.corrcoef(np.argsort(np.argsort(predicted)), time)[0, 1])
    # Rank correlation with time on unseen layouts: the potential grows as the task progresses.
    assert np.mean(correlations) > 0.7
    obs = torch.from_numpy(held_out[0])
    batch = Trajectories(torch.tensor([0, obs.shape[0]]), {"obs": obs}, {"final_obs": obs[-1:]})
    out = signal(batch, "potential")
    with torch.no_grad():
        torch.testing.assert_close(out.step("potential"), signal.model(obs).double())
        torch.testing.assert_close(out.episode("final_potential"), signal.model(obs[-1:]).double())
