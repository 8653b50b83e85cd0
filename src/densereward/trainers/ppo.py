"""PPO for Gymnasium vector environments (discrete or continuous actions), with a pluggable
reward pipeline.

Read it top to bottom like CleanRL's ``ppo.py``: collect a ``[time, envs]`` rollout, turn it into
``Trajectories`` (terminated and truncated kept apart, same-step autoreset), run the reward
pipeline — signals, transforms, then the estimator (GAE by default) — and do the clipped PPO
update on the result. The pipeline is the only plug-in point; the environments come from a
``make_envs(num_envs)`` thunk the caller (a world) supplies. The environment's own reward is the
*true* reward: it is logged separately from the shaped one, with the success rate, read from the
``is_success`` flag an environment puts in its final step's info (as Gymnasium-Robotics does;
the control world's MiniGrid wrapper sets it); an environment without one has no success rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv

from densereward.core.errors import ConfigError, NonFiniteError
from densereward.core.layouts import from_rollout_buffer
from densereward.core.segments import power_of_two_scale
from densereward.core.trajectories import Trajectories
from densereward.models.networks import ActorCritic
from densereward.pipeline import Pipeline, Recipe
from densereward.trainers.config import check_rates
from densereward.trainers.guards import clip_and_check, located


@dataclass(frozen=True)
class PPOConfig:
    """Hyper-parameters; defaults follow CleanRL's PPO. Discrete (categorical) and continuous
    (diagonal Gaussian) action spaces; image observations get a CNN, others an MLP."""

    length: ClassVar[str] = "total_steps"
    estimator: ClassVar[dict[str, Any]] = {"kind": "gae"}

    total_steps: int = 100_000
    """environment steps summed over all envs"""
    num_envs: int = 8
    """parallel environments in one vector env"""
    num_steps: int = 128
    """rollout length per env per update"""
    learning_rate: float = 2.5e-4
    """Adam's learning rate"""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0 over the updates"""
    num_minibatches: int = 4
    """minibatches per epoch over one rollout"""
    update_epochs: int = 4
    """passes over each rollout"""
    clip_range: float = 0.2
    """the ε of the clipped ratio ``clip(ρ, 1-ε, 1+ε)``"""
    ent_coef: float = 0.01
    """weight of the entropy bonus"""
    vf_coef: float = 0.5
    """weight of the value loss"""
    max_grad_norm: float = 0.5
    """global gradient-norm clip"""
    seed: int = 0
    """seeds torch and the environments (a run sets it per seed)"""
    torch_threads: int = 1
    """threads for this trainer; parallel seeds each get their own process"""

    def __post_init__(self) -> None:
        for name in (
            "total_steps",
            "num_envs",
            "num_steps",
            "num_minibatches",
            "update_epochs",
            "torch_threads",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"must be positive, got {getattr(self, name)}")
        check_rates(
            self,
            positive=("learning_rate", "clip_range", "max_grad_norm"),
            non_negative=("ent_coef", "vf_coef"),
        )

    @property
    def updates(self) -> int:
        return max(1, self.total_steps // (self.num_steps * self.num_envs))

    @property
    def budget(self) -> int:
        """Environment steps actually taken: whole rollouts only."""
        return self.updates * self.num_steps * self.num_envs


@dataclass
class TrainResult:
    metrics: list[dict[str, Any]] = field(default_factory=list)
    """One row per update."""
    agent: ActorCritic | None = None


def default_recipe() -> Recipe:
    return Recipe.from_dict(
        {"name": "sparse", "estimator": {"kind": "gae", "gamma": 0.99, "lam": 0.95}}
    )


def train_ppo(
    config: PPOConfig,
    make_envs: Callable[[int], VectorEnv],
    pipeline: Pipeline | None = None,
    on_update: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a fresh actor-critic on ``make_envs(config.num_envs)`` (same-step autoreset)."""
    pipeline = pipeline or Pipeline(default_recipe())
    if pipeline.estimator.selects_trajectories:
        raise ConfigError(
            "estimator",
            f"{pipeline.estimator.component_name} selects trajectories; PPO trains on every step",
        )
    torch.set_num_threads(config.torch_threads)
    torch.manual_seed(config.seed)
    envs = make_envs(config.num_envs)
    if envs.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
        raise ConfigError("envs", "PPO reads final observations: use same-step autoreset")
    obs_shape = envs.single_observation_space.shape
    action_space = envs.single_action_space
    if obs_shape is None or not isinstance(action_space, gym.spaces.Discrete | gym.spaces.Box):
        raise ConfigError("envs", "PPO here needs array observations and discrete or box actions")
    if isinstance(action_space, gym.spaces.Box):
        action_shape: tuple[int, ...] = tuple(action_space.shape)
        agent = ActorCritic(obs_shape, action_dim=int(np.prod(action_shape)))
        low = torch.from_numpy(action_space.low).float()
        high = torch.from_numpy(action_space.high).float()
    else:
        action_shape = ()
        agent = ActorCritic(obs_shape, int(action_space.n))
    optimizer = torch.optim.Adam(agent.parameters(), lr=config.learning_rate, eps=1e-5)
    T, N = config.num_steps, config.num_envs
    num_updates = config.updates

    obs_buffer = torch.zeros(
        (T, N, *obs_shape), dtype=torch.from_numpy(envs.observation_space.sample()).dtype
    )
    final_obs = torch.zeros_like(obs_buffer)  # s' where an episode ended, and after the buffer
    actions = torch.zeros(
        (T, N, *action_shape), dtype=torch.float32 if agent.continuous else torch.int64
    )
    log_probs, values = torch.zeros((T, N)), torch.zeros((T, N))
    rewards = torch.zeros((T, N), dtype=torch.float64)
    terminated = torch.zeros((T, N), dtype=torch.bool)
    truncated = torch.zeros((T, N), dtype=torch.bool)

    next_obs, _ = envs.reset(seed=config.seed)
    episode_return, episode_length = np.zeros(N), np.zeros(N, dtype=np.int64)
    result = TrainResult(agent=agent)
    global_step, start = 0, time.perf_counter()
    for update in range(1, num_updates + 1):
        if config.anneal_lr:
            optimizer.param_groups[0]["lr"] = config.learning_rate * (
                1 - (update - 1) / num_updates
            )
        finished: list[tuple[float, int, float]] = []  # (true return, length, success or NaN)

        # ---- rollout
        for t in range(T):
            obs_buffer[t] = torch.from_numpy(next_obs)
            with torch.no_grad():
                action, log_prob, _, value = agent.act(obs_buffer[t])
            actions[t], log_probs[t], values[t] = action, log_prob, value
            # Continuous actions are clipped for the environment only; the log-probability stays
            # that of the sampled action, as in CleanRL.
            env_action = torch.clamp(action, low, high) if agent.continuous else action
            next_obs, reward, term, trunc, info = envs.step(env_action.numpy())
            rewards[t] = torch.from_numpy(np.asarray(reward, dtype=np.float64))
            terminated[t], truncated[t] = torch.from_numpy(term), torch.from_numpy(trunc)
            episode_return += reward
            episode_length += 1
            for i in np.flatnonzero(term | trunc):
                final_obs[t, i] = torch.from_numpy(np.asarray(info["final_obs"][i]))
                finished.append(
                    (
                        float(episode_return[i]),
                        int(episode_length[i]),
                        episode_success(info, int(i)),
                    )
                )
                episode_return[i], episode_length[i] = 0.0, 0
        global_step += T * N
        final_obs[T - 1] = torch.where(
            (terminated[T - 1] | truncated[T - 1]).view(N, *([1] * len(obs_shape))),
            final_obs[T - 1],
            torch.from_numpy(next_obs),
        )

        # ---- reward pipeline: Trajectories -> signals -> transforms -> estimator
        batch = from_rollout_buffer(
            rewards,
            terminated,
            truncated,
            autoreset="same_step",
            columns={
                "obs": obs_buffer,
                "final_obs": final_obs,
                "value": values.double(),
                "action": actions,
                "log_prob": log_probs,
            },
        )
        batch = _with_bootstrap(batch, agent)
        try:
            shaped = pipeline(batch, iteration=update, dtype=torch.float32)
        except NonFiniteError as error:
            raise located(error, config.seed, update) from None
        flat = shaped.trajectories
        advantages = shaped.advantages.float()
        returns = shaped.returns.float()

        # ---- PPO update on the flat batch
        b_obs, b_actions, b_log_probs = flat.step("obs"), flat.step("action"), flat.step("log_prob")
        size = flat.num_steps
        minibatch = max(1, size // config.num_minibatches)
        clip_fractions, approx_kl = [], torch.zeros(())
        policy_loss = value_loss = entropy = torch.zeros(())
        for _ in range(config.update_epochs):
            order = torch.randperm(size)
            for begin in range(0, size, minibatch):
                index = order[begin : begin + minibatch]
                _, new_log_prob, new_entropy, new_value = agent.act(b_obs[index], b_actions[index])
                log_ratio = new_log_prob - b_log_probs[index]
                ratio = log_ratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).mean()
                    clip_fractions.append(
                        float(((ratio - 1.0).abs() > config.clip_range).float().mean())
                    )
                advantage = advantages[index]
                advantage = _normalized(advantage)
                policy_loss = torch.max(
                    -advantage * ratio,
                    -advantage * ratio.clamp(1 - config.clip_range, 1 + config.clip_range),
                ).mean()
                value_loss = 0.5 * ((new_value - returns[index]) ** 2).mean()
                entropy = new_entropy.mean()
                loss = policy_loss - config.ent_coef * entropy + config.vf_coef * value_loss
                optimizer.zero_grad()
                loss.backward()
                try:
                    clip_and_check(
                        {
                            "policy_loss": policy_loss,
                            "value_loss": value_loss,
                            "entropy": entropy,
                        },
                        agent.parameters(),
                        config.max_grad_norm,
                    )
                except NonFiniteError as error:
                    raise located(error, config.seed, update) from None
                optimizer.step()

        row = {
            "update": update,
            "env_steps": global_step,
            "episodes": len(finished),
            "true_return": float(np.mean([f[0] for f in finished])) if finished else float("nan"),
            "success_rate": float(np.mean([f[2] for f in finished])) if finished else float("nan"),
            "episode_length": float(np.mean([f[1] for f in finished]))
            if finished
            else float("nan"),
            "shaped_reward_per_step": float(flat.step("reward").double().mean()),
            "true_reward_per_step": float(rewards.mean()),
            "value_loss": value_loss.item(),
            "policy_loss": policy_loss.item(),
            "entropy": entropy.item(),
            "approx_kl": approx_kl.item(),
            "clip_fraction": float(np.mean(clip_fractions)),
            "steps_per_second": global_step / (time.perf_counter() - start),
        }
        result.metrics.append(row)
        if on_update is not None:
            on_update(row)
    envs.close()
    pipeline.close()
    return result


def _normalized(advantage: torch.Tensor) -> torch.Tensor:
    """``(A - mean A) / (std A + 1e-8)`` over the minibatch, evaluated on ``A / 2^e`` (``2^e``
    within a factor 2 of ``max |A|``): the same number, bit for bit, without the overflow of
    squaring 1e20."""
    scale = power_of_two_scale(advantage.abs().max())
    scaled = advantage / scale
    return (scaled - scaled.mean()) / (scaled.std() + 1e-8 / scale)


def episode_success(info: dict[str, Any], env: int) -> float:
    """1.0/0.0 for the episode env ``env`` just finished, from the ``is_success`` flag of its
    final info; NaN where the environment defines no success (CartPole: termination is failure,
    and it says nothing)."""
    final_info = info.get("final_info", {})
    flags = final_info.get("is_success") if isinstance(final_info, dict) else None
    if flags is not None and final_info.get("_is_success", [True] * (env + 1))[env]:
        return float(flags[env])
    return float("nan")


def _with_bootstrap(batch: Trajectories, agent: ActorCritic) -> Trajectories:
    """Per-trajectory ``final_obs`` and ``bootstrap_value`` (V of it) at each trajectory's end."""
    last = batch.segments.last
    final = batch.step("final_obs")[last]
    with torch.no_grad():
        bootstrap = agent.value(final).double()
    steps = {k: v for k, v in batch.steps.items() if k != "final_obs"}
    return Trajectories(
        batch.offsets,
        steps,
        {**batch.episodes, "final_obs": final, "bootstrap_value": bootstrap},
        trusted=True,
    )
