"""The control world as a ``World``: Gymnasium/MiniGrid environments trained with PPO.

A run recipe's ``world: {kind: control, env_id: MiniGrid-DoorKey-5x5-v0}``. Each (method, seed)
is its own unit of work (nothing is shared between methods), so they run in parallel. Signals
may ask for demonstrations (the scripted DoorKey expert) and for captions of MiniGrid
observations (ONI's annotator reads them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from annotated_types import Interval

from densereward.core.components import (
    Axis,
    Needs,
    Plot,
    RunResults,
    SignalContext,
    Trained,
    World,
)
from densereward.core.errors import ConfigError
from densereward.core.parameters import Count
from densereward.core.registry import register
from densereward.evaluation.curves import first_reaching, trailing_mean
from densereward.pipeline import Pipeline, Recipe
from densereward.trainers.ppo import PPOConfig, episode_success, train_ppo
from densereward.worlds.control.captions import describe
from densereward.worlds.control.envs import make_env, make_vector_env
from densereward.worlds.control.expert import demonstrations

SMOOTHING = 5
"""Updates in the trailing mean of success and return curves (episodes end irregularly)."""
DEMONSTRATION_SEED, EVALUATION_SEED = 1_000_000, 2_000_000
"""Demonstrations and evaluation episodes use layouts training never sees."""


@register("world", "control", paper="Gymnasium, MiniGrid; PPO (Schulman et al. 2017)")
@dataclass(frozen=True)
class ControlWorld(World):
    """Gymnasium and MiniGrid environments trained with PPO."""

    env_id: str = "MiniGrid-DoorKey-5x5-v0"
    """any Gymnasium id; MiniGrid ids get image observations and a success flag"""
    success_threshold: Annotated[float, Interval(gt=0.0, le=1.0)] = 0.9
    """the success rate a method must reach; the report counts environment steps to it"""
    evaluation_episodes: Count = 16
    """held-out episodes (unseen layouts) played by each trained policy"""

    trainers: ClassVar = {"ppo": PPOConfig}
    progress: ClassVar = Axis("env_steps", "environment steps")
    plots: ClassVar = (
        Plot("success_rate", "success rate", "success_rate.png", SMOOTHING, bounded=True),
        Plot("true_return", "true (unshaped) return", "true_return.png", SMOOTHING),
    )

    def __post_init__(self) -> None:
        try:  # make the environment once now: a bad id fails at load, not inside a worker
            make_env(self.env_id).close()
        except ConfigError as error:
            raise ConfigError("env_id", error.problem) from None

    def label(self) -> str:
        return self.env_id

    def offers(self) -> Needs:
        minigrid = self.env_id.startswith("MiniGrid-")
        return Needs(demonstrations=self.env_id.startswith("MiniGrid-DoorKey-"), captions=minigrid)

    def budget(self, trainer: PPOConfig) -> int:
        return trainer.budget

    def setup(self, seed: int) -> int:
        return seed

    def context(self, seed: int) -> SignalContext:
        offers = self.offers()

        def demonstrate(n: int) -> list[np.ndarray]:
            return demonstrations(self.env_id, n, DEMONSTRATION_SEED + seed * n)

        return SignalContext(
            seed,
            demonstrations=demonstrate if offers.demonstrations else None,
            captions=describe if offers.captions else None,
        )

    def train(
        self, setup: int, trainer: PPOConfig, recipe: Recipe, progress: Callable[[int], None]
    ) -> Trained:
        pipeline = Pipeline(recipe, self.context(setup))
        result = train_ppo(
            trainer,
            lambda n: make_vector_env(self.env_id, n),
            pipeline,
            lambda row: progress(row["env_steps"]),
        )
        return Trained(result.metrics, result.agent, self.evaluate(setup, result.agent))

    def evaluate(self, setup: int, policy: Any) -> dict[str, float]:
        """``evaluation_episodes`` episodes on unseen layouts, one per environment, actions
        sampled from the policy: mean success (NaN where the env defines none), return, length."""
        n = self.evaluation_episodes
        envs = make_vector_env(self.env_id, n)
        obs, _ = envs.reset(seed=EVALUATION_SEED + 1000 * setup)
        returns, lengths = np.zeros(n), np.zeros(n, dtype=np.int64)
        success = np.full(n, np.nan)
        running = np.ones(n, dtype=bool)
        # sampling draws from the global generator: fork it so training that follows is unmoved
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(EVALUATION_SEED + setup)
            while running.any():
                action, _, _, _ = policy.act(torch.from_numpy(obs))
                space = envs.single_action_space
                if isinstance(space, gym.spaces.Box):
                    action = action.clamp(torch.from_numpy(space.low), torch.from_numpy(space.high))
                obs, reward, terminated, truncated, info = envs.step(action.numpy())
                returns += np.where(running, reward, 0.0)
                lengths += running
                for i in np.flatnonzero(running & (terminated | truncated)):
                    success[i] = episode_success(info, int(i))
                running &= ~(terminated | truncated)
        envs.close()
        return {
            "eval_success_rate": float(np.mean(success)),
            "eval_return": float(returns.mean()),
            "eval_episode_length": float(lengths.mean()),
        }

    def report(self, results: RunResults) -> str:
        return control_report(self, results)

    def describe(self) -> str:
        """What a reward function of this environment receives, for a model writing one
        (Text2Reward's environment abstraction): the arrays, their shapes and meaning."""
        return describe_environment(self.env_id)

    def sample_transitions(self, n: int, seed: int) -> tuple[np.ndarray, ...]:
        """``n`` transitions ``(obs, act, next_obs, terminated, truncated)`` of a uniformly random
        policy, for trying a reward function before any training."""
        env = make_env(self.env_id)
        env.action_space.seed(seed)
        obs, _ = env.reset(seed=seed)
        rows: list[tuple[Any, ...]] = []
        for _ in range(n):
            action = env.action_space.sample()
            next_obs, _, terminated, truncated, _ = env.step(action)
            rows.append((obs, action, next_obs, terminated, truncated))
            obs = env.reset()[0] if terminated or truncated else next_obs
        env.close()
        return tuple(np.stack([np.asarray(row[k]) for row in rows]) for k in range(5))


MINIGRID_OBSERVATION = """\
`obs` and `next_obs` are uint8 arrays of shape [n, 7, 7, 3]: the agent's egocentric 7x7 view,
indexed [n, x, y, channel]. The agent stands at x=3, y=6 (bottom centre) facing towards y=0;
cells behind walls are unseen. Channel 0 is the object: 0 unseen, 1 empty, 2 wall, 3 floor,
4 door, 5 key, 6 ball, 7 box, 8 goal, 9 lava. Channel 1 is its colour (0 red, 1 green, 2 blue,
3 purple, 4 yellow, 5 grey). Channel 2 is a door's state: 0 open, 1 closed, 2 locked. What the
agent carries is shown in its own cell: next_obs[:, 3, 6, 0] == 5 means it holds a key.
`act` is an int64 array of shape [n]: 0 turn left, 1 turn right, 2 move forward, 3 pick up,
4 drop, 5 toggle (open a door, with the key for a locked one), 6 done.
`terminated` and `truncated` are bool arrays of shape [n]: the episode ended at the goal (or in
lava), or ran out of time. The environment's own reward is 1 - 0.9 * steps / max_steps on
reaching the goal and 0 otherwise."""


def describe_environment(env_id: str) -> str:
    """The reward function's inputs for ``env_id``: MiniGrid's image encoding spelled out, any
    other environment's observation and action spaces as Gymnasium prints them."""
    env = make_env(env_id)
    try:
        mission = getattr(env.unwrapped, "mission", None)
        if env_id.startswith("MiniGrid-"):
            env.reset(seed=0)
            mission = getattr(env.unwrapped, "mission", None)
            body = MINIGRID_OBSERVATION
        else:
            body = (
                f"`obs` and `next_obs` are arrays of shape [n, *{env.observation_space.shape}] "
                f"from the observation space {env.observation_space}. `act` is an array of shape "
                f"[n, ...] from the action space {env.action_space}. `terminated` and `truncated` "
                "are bool arrays of shape [n]."
            )
    finally:
        env.close()
    task = f"Environment {env_id}" + (f"; the mission: {mission}." if mission else ".")
    return f"{task}\n{body}"


def summarize(results: RunResults, threshold: float) -> dict[str, dict[str, np.ndarray]]:
    """Per method, over seeds: final success and true return (mean over the last 10 % of
    updates, success smoothed) and the environment steps at which the smoothed success rate
    first reaches ``threshold`` (``inf`` if never)."""
    summary: dict[str, dict[str, np.ndarray]] = {}
    for method in results.methods:
        finals, returns, reached = [], [], []
        for seed in results.seeds:
            run = results.run(method, seed)
            success = trailing_mean(
                np.array([r["success_rate"] for r in run], dtype=float), SMOOTHING
            )
            true_return = np.array([r["true_return"] for r in run], dtype=float)
            steps = np.array([r["env_steps"] for r in run])
            tail = max(1, len(run) // 10)
            finals.append(
                np.nanmean(success[-tail:]) if np.any(~np.isnan(success[-tail:])) else 0.0
            )
            returns.append(
                np.nanmean(true_return[-tail:]) if np.any(~np.isnan(true_return[-tail:])) else 0.0
            )
            reached.append(first_reaching(steps, success, threshold))
        summary[method] = {
            "final_success": np.array(finals),
            "final_return": np.array(returns),
            "steps_to_threshold": np.array(reached),
        }
    return summary


def control_report(world: ControlWorld, results: RunResults) -> str:
    threshold = world.success_threshold
    summary = summarize(results, threshold)
    baseline = results.methods[0]
    budget = results.budget

    def steps_text(values: np.ndarray) -> str:
        reached = values[np.isfinite(values)]
        median = np.median(values) if reached.size * 2 > values.size else float("inf")
        head = f"{median:,.0f}" if np.isfinite(median) else f"> {budget:,}"
        return f"{head} ({reached.size}/{values.size} reached)"

    lines = [
        f"World `{world.label()}`, PPO for {budget:,} environment steps per run, seeds "
        f"{', '.join(map(str, results.seeds))}. Wall time {results.wall:.0f} s. Success and return "
        "are the environment's own (unshaped) ones, smoothed over 5 updates; *final* is the mean "
        f"over the last 10 % of updates; *steps to {threshold:.0%}* is the median over seeds of "
        f"the first step where the smoothed success rate reaches {threshold:.0%}; *held-out* is "
        f"the trained policy on {world.evaluation_episodes} unseen layouts.",
        "",
        f"| method | final success | final true return | steps to {threshold:.0%} success | vs {baseline} | held-out success | minutes per run |",
        "|---|---|---|---|---|---|---|",
    ]
    base = np.median(summary[baseline]["steps_to_threshold"])
    for method, row in summary.items():
        mine = np.median(row["steps_to_threshold"])
        ratio = f"{mine / base:.2f}x steps" if np.isfinite(mine) and np.isfinite(base) else "-"
        minutes = np.mean([results.seconds[(method, s)] for s in results.seeds]) / 60
        held_out = np.array(
            [e["eval_success_rate"] for e in results.evaluations if e["method"] == method]
        )
        held_out_text = (
            f"{np.nanmean(held_out):.2f} ± {np.nanstd(held_out):.2f}"
            if np.any(~np.isnan(held_out))
            else "-"
        )
        lines.append(
            f"| {method} | {row['final_success'].mean():.2f} ± {row['final_success'].std():.2f} | "
            f"{row['final_return'].mean():.3f} ± {row['final_return'].std():.3f} | "
            f"{steps_text(row['steps_to_threshold'])} | {ratio} | "
            f"{held_out_text} | {minutes:.1f} |"
        )
    lines += [
        "",
        "![success rate](success_rate.png)",
        "",
        "![true return](true_return.png)",
        "",
        "Files: `config.yaml` (resolved recipe), `metrics.parquet` (one row per update per run), "
        "`evaluation.parquet` (held-out episodes per run), `checkpoints/` (policy weights per run).",
        "",
    ]
    return "\n".join(lines)


__all__ = ["ControlWorld", "control_report", "describe_environment", "summarize"]
