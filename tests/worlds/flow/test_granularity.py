"""G²RPO: ODE completions at coarser strides, and the multi-granularity advantage."""

from __future__ import annotations

import itertools

import torch

from densereward.core.components import SignalContext
from densereward.core.trajectories import Trajectories
from densereward.estimators.multi_granularity import estimate_multi_granularity_grpo
from densereward.worlds.flow.model import complete_ode, time_grid
from densereward.worlds.flow.signals import ODERewardGain
from densereward.worlds.flow.world import Completion, FlowSetup
from tests.worlds.flow.conftest import WORLD
from tests.worlds.flow.test_rewards import rollout, slow_timestep_grpo


def slow_complete(model, x, index, prompt, steps, stride):
    """One state at a time, on the coarse grid ``t_k, t_{k+g}, ..., t_T`` written out."""
    grid = time_grid(steps).tolist()
    points = [*range(index, steps, stride), steps]
    x = x.clone()
    for here, there in itertools.pairwise(points):
        v = model(x.unsqueeze(0), torch.tensor(grid[here]), prompt.unsqueeze(0))[0]
        x = x + (grid[there] - grid[here]) * v
    return x


def test_coarse_ode_completion_takes_strided_euler_steps(flow_setup: FlowSetup) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(12, 2, generator=generator)
    index = torch.tensor([0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 5])
    prompts = torch.arange(12) % 4
    for stride in (1, 2, 3, 4):
        got = complete_ode(flow_setup.model, x, index, prompts, WORLD.steps, stride)
        with torch.no_grad():
            expected = torch.stack(
                [
                    slow_complete(flow_setup.model, x[i], int(index[i]), prompts[i], 6, stride)
                    for i in range(12)
                ]
            )
        torch.testing.assert_close(got, expected)
    coarse = complete_ode(flow_setup.model, x, index, prompts, WORLD.steps, 3)
    fine = complete_ode(flow_setup.model, x, index, prompts, WORLD.steps, 1)
    assert not torch.allclose(coarse[index < 4], fine[index < 4])  # the stride matters


def test_gains_telescope_at_every_granularity(flow_setup: FlowSetup) -> None:
    batch = rollout(flow_setup, 5)
    completion = Completion(flow_setup.model, flow_setup.rewards, "gold", WORLD.steps)
    context = SignalContext(models={"completion": completion})
    first = batch.offsets[:-1]
    prompts = batch.episode("prompt")
    for granularity in (2, 3):
        out = ODERewardGain(granularity).bind(context)(batch, "gain")
        totals = torch.stack([g.sum() for g in out.to_episodes("gain")])
        start = complete_ode(
            flow_setup.model,
            batch.step("state")[first],
            torch.zeros_like(prompts),
            prompts,
            WORLD.steps,
            granularity,
        )
        initial = flow_setup.rewards.gold(start, prompts).double()
        torch.testing.assert_close(totals, batch.outcome - initial, atol=1e-6, rtol=0)


def test_multi_granularity_advantage_sums_per_timestep_z_scores() -> None:
    generator = torch.Generator().manual_seed(3)
    columns = {f"g{g}": torch.randn(6 * 5, generator=generator).double() for g in (1, 2, 3)}
    columns["g2"][5:10] = columns["g2"][0:5]
    batch = Trajectories(
        torch.arange(0, 31, 5), columns, {"group": torch.tensor([0, 0, 1, 1, 1, 0])}
    )
    names = ("g1", "g2", "g3")
    expected = torch.tensor(
        [sum(v) for v in zip(*(slow_timestep_grpo(batch, n, 1e-6) for n in names), strict=True)],
        dtype=torch.float64,
    )
    got = estimate_multi_granularity_grpo(batch, names).advantages
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)  # the reference is float32
    one = estimate_multi_granularity_grpo(batch, ("g1",)).advantages
    reference = torch.tensor(slow_timestep_grpo(batch, "g1", 1e-6)).double()
    torch.testing.assert_close(one, reference, atol=1e-5, rtol=1e-5)
