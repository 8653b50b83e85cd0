"""Estimator speed at 512 prompts x 8 responses x up to 1024 tokens (float32, random lengths).

Every token is a step (the worst case for step-level estimators). For each estimator it prints
the median time, the ratio to one elementwise multiply of the same flat tensors, and the ratio to
the naive per-trajectory loop; for GAE and REINFORCE++ also the common loop over time on the
padded ``[batch, tokens]`` layout. All baselines are measured in this process.

The naive loop costs seconds per call at full size, so it is timed on the first
``--naive-trajectories`` trajectories and scaled by total steps (stated in the output).

    python benchmarks/estimators.py [--prompts 512 --responses 8 --max-tokens 1024 --repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from densereward import Trajectories, to_padded
from densereward.estimators import (
    estimate_fork_relative,
    estimate_gae,
    estimate_grpo,
    estimate_igpo,
    estimate_prime,
    estimate_reinforce_pp,
    estimate_rloo,
    estimate_step_grpo,
)
from densereward.estimators.step_grpo import StepGRPO

GAMMA, LAM = 0.99, 0.95


def median_ms(function: Callable[[], object], repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def make_batch(prompts: int, responses: int, max_tokens: int, seed: int = 0) -> Trajectories:
    generator = torch.Generator().manual_seed(seed)
    count = prompts * responses
    lengths = torch.randint(1, max_tokens + 1, (count,), generator=generator)
    total = int(lengths.sum())
    offsets = torch.zeros(count + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=offsets[1:])

    def column() -> torch.Tensor:
        return torch.randn(total, generator=generator)

    steps = {
        "reward": column(),
        "value": column(),
        "kl": column() * 0.01,
        "prm": column(),
        "implicit_reward": column() * 0.05,
        "information_gain": column() * 0.1,
    }
    episodes = {
        "outcome": (torch.rand(count, generator=generator) < 0.5).float(),
        "group": torch.arange(prompts).repeat_interleave(responses),
        "terminated": torch.rand(count, generator=generator) < 0.8,
        "bootstrap_value": torch.randn(count, generator=generator),
    }
    episodes["truncated"] = ~episodes["terminated"]
    return Trajectories(offsets, steps, episodes)


# ----------------------------------------------------------------------------- naive baselines
def _scan_loop(x: torch.Tensor, gamma: float) -> torch.Tensor:
    out, running = torch.empty_like(x), 0.0
    values = x.tolist()
    for t in range(len(values) - 1, -1, -1):
        running = values[t] + gamma * running
        out[t] = running
    return out


def _episodes(batch: Trajectories, name: str, count: int) -> list[torch.Tensor]:
    return batch.to_episodes(name)[:count]


def _groups(batch: Trajectories, count: int) -> dict[int, list[int]]:
    members: dict[int, list[int]] = {}
    for i, g in enumerate(batch.episodes["group"][:count].tolist()):
        members.setdefault(g, []).append(i)
    return members


def naive_gae(batch: Trajectories, count: int) -> None:
    outcome, terminated = batch.outcome.tolist(), batch.terminated.tolist()
    bootstrap = batch.episodes["bootstrap_value"].tolist()
    for i, (r, v) in enumerate(
        zip(_episodes(batch, "reward", count), _episodes(batch, "value", count), strict=True)
    ):
        r = r.clone()
        r[-1] += outcome[i]
        nxt = torch.cat([v[1:], v.new_tensor([0.0 if terminated[i] else bootstrap[i]])])
        advantages = _scan_loop(r + GAMMA * nxt - v, GAMMA * LAM)
        _ = advantages + v


def naive_scores(batch: Trajectories, count: int) -> list[float]:
    outcome = batch.outcome.tolist()
    return [float(r.sum()) + outcome[i] for i, r in enumerate(_episodes(batch, "reward", count))]


def naive_grpo(batch: Trajectories, count: int, scale: bool = True) -> None:
    scores = naive_scores(batch, count)
    lengths = batch.lengths.tolist()
    for members in _groups(batch, count).values():
        values = torch.tensor([scores[i] for i in members])
        std = values.std() if len(members) > 1 else torch.tensor(0.0)
        for j, i in enumerate(members):
            advantage = (values[j] - values.mean()) / ((std + 1e-6) if scale else 1.0)
            _ = advantage.expand(lengths[i]).clone()


def naive_rloo(batch: Trajectories, count: int) -> None:
    scores = naive_scores(batch, count)
    lengths = batch.lengths.tolist()
    for members in _groups(batch, count).values():
        for i in members:
            others = [scores[j] for j in members if j != i]
            advantage = scores[i] - (sum(others) / len(others) if others else scores[i])
            _ = torch.full((lengths[i],), advantage)


def naive_reinforce_pp(batch: Trajectories, count: int) -> None:
    outcome = batch.outcome.tolist()
    returns = []
    for i, (r, kl) in enumerate(
        zip(_episodes(batch, "reward", count), _episodes(batch, "kl", count), strict=True)
    ):
        r = r - 0.01 * kl
        r[-1] += outcome[i]
        returns.append(_scan_loop(r, 1.0))
    g = torch.cat(returns)
    _ = (g - g.mean()) / (g.std() + 1e-8)


def naive_step_grpo(batch: Trajectories, count: int, column: str = "prm") -> None:
    rewards = _episodes(batch, column, count)
    for members in _groups(batch, count).values():
        pool = torch.cat([rewards[i] for i in members])
        mean, std = pool.mean(), pool.std()
        for i in members:
            _scan_loop((rewards[i] - mean) / (std + 1e-6), 1.0)
    naive_grpo(batch, count)


def naive_prime(batch: Trajectories, count: int) -> None:
    rewards = _episodes(batch, "implicit_reward", count)
    for members in _groups(batch, count).values():
        means = {i: rewards[i].mean() for i in members}
        for i in members:
            others = [means[j] for j in members if j != i]
            baseline = sum(others) / len(others) if others else means[i]
            _scan_loop(rewards[i] - baseline, 1.0)
    naive_rloo(batch, count)


def naive_igpo(batch: Trajectories, count: int) -> None:
    outcome = batch.outcome.tolist()
    gains = _episodes(batch, "information_gain", count)
    returns = []
    for i, g in enumerate(gains):
        r = g.clone()
        r[-1] = outcome[i]
        returns.append(_scan_loop(r, 0.5))
    for members in _groups(batch, count).values():
        pool = torch.cat([returns[i] for i in members])
        mean, std = pool.mean(), pool.std()
        for i in members:
            _ = (returns[i] - mean) / (std + 1e-6)


# ----------------------------------------------------------------------------- loop over time
def loop_over_time_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The common implementation (verl's core_algos, CleanRL): vectorized over the batch,
    a Python loop over token positions."""
    last, reversed_advantages = 0.0, []
    length = rewards.shape[1]
    for t in reversed(range(length)):
        next_values = values[:, t + 1] if t < length - 1 else 0.0
        delta = rewards[:, t] + GAMMA * next_values - values[:, t]
        last = delta + GAMMA * LAM * last
        reversed_advantages.append(last)
    return torch.stack(reversed_advantages[::-1], dim=1) * mask


def loop_over_time_returns(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    running = torch.zeros(rewards.shape[0])
    out = torch.zeros_like(rewards)
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + running
        out[:, t] = running
        running = running * mask[:, t]
    return out


def paired_ms(
    ours: Callable[[], object], theirs: Callable[[], object], repeats: int
) -> tuple[float, float]:
    """Median times of two functions timed alternately (the machine is shared and noisy)."""
    ours(), theirs()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for function, out in ((ours, times[0]), (theirs, times[1])):
            start = time.perf_counter()
            function()
            out.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times[0]), 1e3 * statistics.median(times[1])


def against_verl(batch: Trajectories, width: int, repeats: int) -> None:
    """The adapter call (padded in, padded out) against verl's own functions on the same
    ``[B, T]`` tensors; targets: group estimators within 1.5x of verl's vectorised GRPO, GAE and
    REINFORCE++ at least 10x faster than verl's."""
    try:
        from omegaconf import OmegaConf
        from verl.trainer.ppo import core_algos
    except ImportError:
        print("\nverl is not installed: no comparison with verl (pip install 'densereward[verl]')")
        return
    from densereward.adapters.padded import (
        padded_estimate,
        padded_gae,
        padded_grpo,
        padded_reinforce_pp,
        padded_rloo,
    )

    rewards, mask = to_padded(batch, batch.step("reward"), width=width)
    values, _ = to_padded(batch, batch.step("value"), width=width)
    mask = mask.long()  # verl's response_mask is an integer tensor
    index = np.array([f"uid-{g}" for g in batch.episodes["group"].tolist()], dtype=object)
    config = OmegaConf.create({"gamma": 1.0})
    step_grpo = StepGRPO()
    sparse = rewards * (
        torch.rand(rewards.shape, generator=torch.Generator().manual_seed(0)) < 0.02
    )
    vectorized_grpo = lambda: core_algos.compute_grpo_vectorized_outcome_advantage(  # noqa: E731
        rewards, mask, index
    )
    cases: list[tuple[str, Callable[[], object], str, Callable[[], object]]] = [
        (
            "grpo",
            lambda: padded_grpo(rewards, mask, index),
            "grpo (loop)",
            lambda: core_algos.compute_grpo_outcome_advantage(rewards, mask, index),
        ),
        ("grpo", lambda: padded_grpo(rewards, mask, index), "grpo_vectorized", vectorized_grpo),
        (
            "rloo",
            lambda: padded_rloo(rewards, mask, index),
            "rloo (loop)",
            lambda: core_algos.compute_rloo_outcome_advantage(rewards.clone(), mask, index),
        ),
        (
            "rloo",
            lambda: padded_rloo(rewards, mask, index),
            "rloo_vectorized",
            lambda: core_algos.compute_rloo_vectorized_outcome_advantage(rewards, mask, index),
        ),
        ("rloo", lambda: padded_rloo(rewards, mask, index), "grpo_vectorized", vectorized_grpo),
        (
            "reinforce_pp",
            lambda: padded_reinforce_pp(rewards, mask),
            "reinforce_plus_plus",
            lambda: core_algos.compute_reinforce_plus_plus_outcome_advantage(rewards, mask, config),
        ),
        (
            "step_grpo 2%",  # densereward_step_grpo, 2% of tokens end a step
            lambda: padded_estimate(step_grpo, sparse, mask, index),
            "grpo_vectorized",
            vectorized_grpo,
        ),
        (
            "step_grpo all",  # every token a step: the worst case
            lambda: padded_estimate(step_grpo, rewards, mask, index),
            "grpo_vectorized",
            vectorized_grpo,
        ),
        (
            "gae",
            lambda: padded_gae(rewards, values, mask, GAMMA, LAM),
            "gae",
            lambda: core_algos.compute_gae_advantage_return(rewards, values, mask, GAMMA, LAM),
        ),
    ]
    print(f"\nthrough the adapter: [{rewards.shape[0]}, {width}] padded in and out, against verl")
    header = f"{'densereward':<16}{'ms':>8}{'verl':>24}{'ms':>9}{'verl / ours':>13}"
    print(header)
    print("-" * len(header))
    for ours_name, ours, their_name, theirs in cases:
        ours_ms, their_ms = paired_ms(ours, theirs, repeats if "loop" not in their_name else 3)
        print(
            f"{ours_name:<16}{ours_ms:>8.1f}{their_name:>24}{their_ms:>9.1f}{their_ms / ours_ms:>13.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--responses", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--naive-trajectories", type=int, default=128)
    parser.add_argument("--only-verl", action="store_true", help="only the comparison with verl")
    args = parser.parse_args()

    batch = make_batch(args.prompts, args.responses, args.max_tokens)
    if args.only_verl:
        against_verl(batch, args.max_tokens, args.repeats)
        return

    def build_indices(target: Trajectories) -> None:
        segments = target.segments
        # cached properties: reading them builds them
        _ = segments.lengths, segments.last, target.groups.size
        segments.block_plan()

    def fresh_indices() -> None:
        build_indices(Trajectories(batch.offsets, batch.steps, batch.episodes, trusted=True))

    index_ms = median_ms(fresh_indices, 5)
    build_indices(batch)
    reward, value = batch.step("reward"), batch.step("value")
    multiply_ms = median_ms(lambda: reward * value, args.repeats)
    subset = min(args.naive_trajectories, len(batch))
    scale = batch.num_steps / int(batch.offsets[subset])

    padded_rewards, mask = to_padded(batch, reward, width=args.max_tokens)
    padded_values, _ = to_padded(batch, value, width=args.max_tokens)
    mask_float = mask.float()
    time_loop = {
        "gae": median_ms(lambda: loop_over_time_gae(padded_rewards, padded_values, mask_float), 3),
        "reinforce_pp": median_ms(lambda: loop_over_time_returns(padded_rewards, mask_float), 3),
    }
    cases: list[tuple[str, Callable[[], object], Callable[[Trajectories, int], None]]] = [
        ("gae", lambda: estimate_gae(batch, gamma=GAMMA, lam=LAM), naive_gae),
        ("grpo", lambda: estimate_grpo(batch), naive_grpo),
        (
            "dr_grpo",
            lambda: estimate_grpo(batch, scale="none"),
            lambda b, n: naive_grpo(b, n, False),
        ),
        ("rloo", lambda: estimate_rloo(batch), naive_rloo),
        (
            "reinforce_pp",
            lambda: estimate_reinforce_pp(batch, kl="kl", kl_coef=0.01),
            naive_reinforce_pp,
        ),
        ("step_grpo", lambda: estimate_step_grpo(batch, process="prm"), naive_step_grpo),
        ("prime", lambda: estimate_prime(batch), naive_prime),
        ("igpo", lambda: estimate_igpo(batch), naive_igpo),
        ("fork_relative (no tree)", lambda: estimate_fork_relative(batch), naive_grpo),
    ]
    print(
        f"batch: {len(batch)} trajectories, {batch.num_steps} steps (tokens), float32, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"one elementwise multiply of two [{batch.num_steps}] tensors: {multiply_ms:.2f} ms")
    print(
        f"segment index build, once per batch and shared by all estimators (not in the times "
        f"below): {index_ms:.1f} ms"
    )
    print(f"naive loop timed on {subset} trajectories and scaled x{scale:.1f} by steps\n")
    header = f"{'estimator':<24}{'median ms':>10}{'x multiply':>12}{'naive ms':>11}{'naive / ours':>14}{'time-loop ms':>14}{'time-loop / ours':>18}"
    print(header)
    print("-" * len(header))
    for name, function, naive in cases:
        ours = median_ms(function, args.repeats)
        start = time.perf_counter()
        naive(batch, subset)
        naive_ms = 1e3 * (time.perf_counter() - start) * scale
        loop = time_loop.get(name)
        loop_text = (
            f"{loop:>14.1f}{loop / ours:>18.1f}" if loop is not None else f"{'-':>14}{'-':>18}"
        )
        print(
            f"{name:<24}{ours:>10.2f}{ours / multiply_ms:>12.1f}{naive_ms:>11.0f}{naive_ms / ours:>14.0f}{loop_text}"
        )
    against_verl(batch, args.max_tokens, args.repeats)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
