"""The flow world as a ``World``: a prompt-conditioned rectified flow on 2-D points or 8×8 digit
images, fine-tuned with Flow-GRPO on denoising trajectories.

A run recipe's ``world: {kind: flow, reward: gold}`` (``dataset: digits`` for the images). One seed's methods share one setup (the
pretrained flow and the proxy probe), so they run as one unit of work per seed. Each denoising
step is a step of a ``Trajectories`` batch (groups = samples of one prompt), the terminal reward
is the trajectory's ``outcome``; signals may ask for ``completion`` (the reward of a state's ODE
completion under the live policy, DenseGRPO's latent reward).
"""

from __future__ import annotations

import base64
import copy
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

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
from densereward.core.parameters import Count, NonNegative, NonNegativeCount, Positive
from densereward.core.registry import register
from densereward.core.trajectories import Trajectories
from densereward.evaluation.curves import first_reaching, trailing_mean
from densereward.pipeline import Pipeline, Recipe
from densereward.worlds.flow.images import Digits, ImageRewards
from densereward.worlds.flow.model import (
    Data,
    Mixture,
    SDETrajectory,
    VelocityField,
    complete_ode,
    pretrain,
    sample_ode,
    sample_sde,
    step_log_probs,
)
from densereward.worlds.flow.rewards import Rewards
from densereward.worlds.flow.sampling import sampling_schemes

SMOOTHING = 5
"""Updates in the trailing mean of the reward curves."""
EVALUATION_SEED, PROBE_SEED = 2_000_000, 3_000_000
PICTURE_SAMPLES = 16
"""ODE samples per prompt kept in each evaluation row for the report's scatter."""
IMAGE_SAMPLES = 4
"""ODE images per prompt kept in each evaluation row for the report's grid (digits)."""


@dataclass(frozen=True)
class FlowGRPOConfig:
    """Flow-GRPO (Liu et al. 2025) on a small flow: SDE rollouts, PPO-clip on per-step ratios."""

    length: ClassVar[str] = "updates"
    estimator: ClassVar[dict[str, Any]] = {"kind": "grpo"}

    updates: Count = 60
    """policy updates (one batch of fresh samples each)"""
    group_size: Annotated[int, Interval(ge=2)] = 16
    """samples per prompt: a GRPO group"""
    prompts_per_update: Count = 4
    """prompts per batch, drawn uniformly with replacement"""
    learning_rate: Positive = 3e-4
    """Adam's step size on the velocity field"""
    epochs: Count = 1
    """gradient passes over each batch (1: on-policy, the ratio is 1)"""
    clip_range: Positive = 0.2
    """PPO's ratio clip"""
    noise_level: Positive = 0.7
    """``a`` in the SDE's ``σ_t = a sqrt(t / (1 - t))``"""
    kl_coef: NonNegative = 0.0
    """β of Flow-GRPO's KL term ``β · mean_t KL(π_θ(·|x_t) || π_ref(·|x_t))`` in the loss: the
    safeguard that keeps the policy near the pretrained flow (0: none)"""
    seed: int = 0
    """seeds the rollouts (a run sets it)"""


@dataclass(frozen=True)
class FlowSetup:
    """One seed's start: the pretrained velocity field and the rewards."""

    seed: int
    model: VelocityField
    rewards: Rewards | ImageRewards


class Completion:
    """DenseGRPO's latent reward: ``R(x̂_0)`` of each state's ODE completion under ``policy``."""

    def __init__(
        self, policy: VelocityField, rewards: Rewards | ImageRewards, kind: str, steps: int
    ) -> None:
        self.policy, self.rewards, self.kind, self.steps = policy, rewards, kind, steps

    def __call__(
        self,
        states: torch.Tensor,
        indices: torch.Tensor,
        prompts: torch.Tensor,
        stride: int = 1,
    ) -> torch.Tensor:
        states = states.float()
        clean = complete_ode(self.policy, states, indices, prompts, self.steps, stride)
        return self.rewards.of(self.kind, clean, prompts)


@register("world", "flow", paper="Rectified flow (Liu et al. 2023); Flow-GRPO (Liu et al. 2025)")
@dataclass(frozen=True)
class FlowWorld(World):
    """A prompt-conditioned rectified flow (2-D points or 8×8 digits) fine-tuned by Flow-GRPO on a
    gold or proxy reward."""

    dataset: Literal["mixture", "digits"] = "mixture"
    """``mixture``: 2-D points, each prompt two modes of a ring, the rarer one its target (gold:
    closeness to it); ``digits``: scikit-learn's 8×8 digits, prompt ``c`` a bold digit ``c``
    (gold: a classifier's probability of it × a digit-manifold quality factor × boldness; see
    ``images``; ``prompts`` ≤ 10)"""
    prompts: Annotated[int, Interval(ge=2, le=16)] = 4
    """prompts (classes)"""
    target_weight: Annotated[float, Interval(gt=0.0, lt=1.0)] = 0.25
    """data weight of each prompt's target mode (the pretrained model's gold reward ≈ this)"""
    steps: Annotated[int, Interval(ge=2, le=50)] = 10
    """denoising steps: the trajectory length"""
    hidden: Count = 128
    """width of the velocity field's MLP"""
    pretrain_steps: NonNegativeCount = 2000
    """flow-matching steps of the base model (batch 256)"""
    reward: Literal["gold", "proxy"] = "gold"
    """what the methods train on: the gold reward, or the hackable linear-probe proxy"""
    evaluation_samples: Count = 256
    """ODE samples per prompt in the held-out evaluation"""

    trainers: ClassVar = {"flow_grpo": FlowGRPOConfig}
    progress: ClassVar = Axis("samples", "samples (denoising trajectories)")
    plots: ClassVar = (
        Plot("gold_reward", "gold reward of training samples", "gold_reward.png", SMOOTHING),
        Plot("proxy_reward", "proxy reward of training samples", "proxy_reward.png", SMOOTHING),
        Plot("kl", "KL to the initial policy (per trajectory)", "kl.png", SMOOTHING),
    )
    shares_setup: ClassVar = True

    def __post_init__(self) -> None:
        if self.dataset == "digits" and self.prompts > 10:
            raise ConfigError("prompts", f"the digits are 10 classes, got {self.prompts}")

    def label(self) -> str:
        kind = "8×8 digit" if self.dataset == "digits" else "2-D"
        return (
            f"{kind} rectified flow, {self.prompts} prompts, {self.steps} steps, "
            f"{self.reward} reward"
        )

    def offers(self) -> Needs:
        return Needs(models=("completion",))

    def check(self, trainer: FlowGRPOConfig) -> None:
        if trainer.noise_level > 2.0:
            raise ConfigError("noise_level", "above 2 the SDE's noise swamps a 2-D sample")

    def budget(self, trainer: FlowGRPOConfig) -> int:
        return trainer.updates * trainer.prompts_per_update * trainer.group_size

    def data(self) -> Data:
        if self.dataset == "digits":
            return Digits(self.prompts)
        return Mixture(self.prompts, self.target_weight)

    def setup(self, seed: int) -> FlowSetup:
        generator = torch.Generator().manual_seed(seed)
        data = self.data()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = VelocityField(self.prompts, self.hidden, data.dims)
        pretrain(model, data, self.pretrain_steps, generator)
        probe = torch.Generator().manual_seed(PROBE_SEED + seed)
        rewards: Rewards | ImageRewards
        if isinstance(data, Digits):
            rewards = ImageRewards.fit(data, probe)
        else:
            assert isinstance(data, Mixture)
            rewards = Rewards.fit(data, probe)
        return FlowSetup(seed, model, rewards)

    # ------------------------------------------------------------------ training
    def rollout(
        self,
        policy: VelocityField,
        reference: VelocityField,
        setup: FlowSetup,
        trainer: FlowGRPOConfig,
        generator: torch.Generator,
        branch: int = 0,
        levels: torch.Tensor | None = None,
    ) -> tuple[Trajectories, dict[str, torch.Tensor]]:
        """One batch: ``prompts_per_update`` prompts × ``group_size`` SDE samples, as
        trajectories of ``steps`` steps, with what the loss needs.

        ``branch > 0`` (B²-DiffuRL's branch sampling): each group first samples one SDE prefix of
        ``branch`` steps, then its ``group_size`` members continue independently from that shared
        state; the prefix steps are identical across the group (same states, log-probabilities).
        ``levels`` (``[steps]``): the noise level of each step (default: the trainer's)."""
        steps, group = self.steps, trainer.group_size
        levels = torch.full((steps,), trainer.noise_level) if levels is None else levels
        chosen = torch.randint(self.prompts, (trainer.prompts_per_update,), generator=generator)
        prompts = chosen.repeat_interleave(group)
        if branch > 0:
            prefix = sample_sde(policy, chosen, steps, levels, generator, stop=branch)
            rest = sample_sde(
                policy,
                prompts,
                steps,
                levels,
                generator,
                initial=prefix.final.repeat_interleave(group, 0),
                start=branch,
            )

            def joined(head: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
                return torch.cat([head.repeat_interleave(group, 0), tail], 1)

            trajectory = SDETrajectory(
                joined(prefix.states, rest.states),
                joined(prefix.next_states, rest.next_states),
                joined(prefix.log_probs, rest.log_probs),
                joined(prefix.means, rest.means),
                torch.cat([prefix.stds, rest.stds]),
            )
        else:
            trajectory = sample_sde(policy, prompts, steps, levels, generator)
        n, dims = prompts.shape[0], policy.dims
        flat_states = trajectory.states.reshape(n * steps, dims)
        flat_next = trajectory.next_states.reshape(n * steps, dims)
        index = torch.arange(steps).repeat(n)
        flat_prompts = prompts.repeat_interleave(steps)
        with torch.no_grad():
            _, reference_mean = step_log_probs(
                reference, flat_states, flat_next, index, flat_prompts, steps, levels
            )
        std = trajectory.stds.repeat(n)
        # Both policies share the SDE's σ_t: KL(N(μ_θ, s²) || N(μ_ref, s²)) = |μ_θ - μ_ref|² / 2s²
        kl = (trajectory.means.reshape(n * steps, dims) - reference_mean).pow(2).sum(1) / (
            2 * std**2
        )
        final = trajectory.final
        gold = setup.rewards.gold(final, prompts)
        proxy = setup.rewards.proxy(final, prompts)
        outcome = gold if self.reward == "gold" else proxy
        batch = Trajectories(
            torch.arange(0, n * steps + 1, steps),
            {
                "reward": torch.zeros(n * steps, dtype=torch.float64),
                "kl": kl.double(),
                "state": flat_states,
                "next_state": flat_next,
                "step_index": index,
                "noise_level": levels.repeat(n).double(),
            },
            {
                "outcome": outcome.double(),
                "gold": gold.double(),
                "proxy": proxy.double(),
                "group": torch.arange(trainer.prompts_per_update).repeat_interleave(group),
                "prompt": prompts,
                "branch_index": torch.full((n,), branch),
            },
        )
        extras = {
            "log_probs": trajectory.log_probs.reshape(n * steps),
            "prompts": flat_prompts,
            "kl_per_trajectory": kl.view(n, steps).sum(1),
            "reference_mean": reference_mean,
            "std": std,
            # steps before the branch point are the group's shared prefix: not trained
            "trained": (index >= branch).float(),
        }
        return batch, extras

    def train(
        self,
        setup: FlowSetup,
        trainer: FlowGRPOConfig,
        recipe: Recipe,
        progress: Callable[[int], None],
    ) -> Trained:
        policy = copy.deepcopy(setup.model)
        reference = setup.model
        policy.train()
        optimizer = torch.optim.Adam(policy.parameters(), lr=trainer.learning_rate)
        generator = torch.Generator().manual_seed(trainer.seed)
        context = SignalContext(
            trainer.seed,
            models={"completion": Completion(policy, setup.rewards, self.reward, self.steps)},
        )
        signals, _, _ = recipe.build()
        schemes = sampling_schemes(signals)
        levels = torch.full((self.steps,), trainer.noise_level)
        pipeline = Pipeline(recipe, context)
        rows: list[dict[str, Any]] = []
        try:
            for update in range(trainer.updates):
                branch = (
                    schemes.branch.branch_point(update, trainer.updates, self.steps)
                    if schemes.branch is not None
                    else 0
                )
                batch, extras = self.rollout(
                    policy, reference, setup, trainer, generator, branch, levels
                )
                result = pipeline(batch, update, dtype=torch.float32)
                advantages = result.advantages.float()
                trained = extras["trained"]
                for _ in range(trainer.epochs):
                    log_probs, mean = step_log_probs(
                        policy,
                        batch.step("state"),
                        batch.step("next_state"),
                        batch.step("step_index"),
                        extras["prompts"],
                        self.steps,
                        levels,
                    )
                    ratio = torch.exp(log_probs - extras["log_probs"])
                    clipped = ratio.clamp(1 - trainer.clip_range, 1 + trainer.clip_range)
                    surrogate = torch.minimum(ratio * advantages, clipped * advantages)
                    loss = -(surrogate * trained).sum() / trained.sum()
                    if trainer.kl_coef > 0:
                        kl = (mean - extras["reference_mean"]).pow(2).sum(1) / (
                            2 * extras["std"] ** 2
                        )
                        loss = loss + trainer.kl_coef * (kl * trained).sum() / trained.sum()
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                if schemes.calibration is not None:
                    levels = schemes.calibration.calibrate(levels, result.trajectories)
                samples = (update + 1) * len(batch)
                rows.append(
                    {
                        "update": update,
                        "samples": samples,
                        "gold_reward": float(batch.episode("gold").mean()),
                        "proxy_reward": float(batch.episode("proxy").mean()),
                        "kl": float(extras["kl_per_trajectory"].mean()),
                        "loss": float(loss.detach()),
                        "noise_level": float(levels.mean()),
                        "noise_level_spread": float(levels.max() - levels.min()),
                        "branch_index": branch,
                    }
                )
                progress(samples)
        finally:
            pipeline.close()
        policy.eval()
        return Trained(rows, policy, self.evaluate(setup, policy))

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, setup: FlowSetup, policy: VelocityField) -> dict[str, float]:
        """``evaluation_samples`` ODE samples per prompt from fixed noise: mean gold and proxy
        reward, the share that lands on the target (gold > 0.5), and a few samples for the
        report's picture (``sample_<i>_x``/``_y``, prompt ``i % prompts``)."""
        generator = torch.Generator().manual_seed(EVALUATION_SEED + setup.seed)
        prompts = torch.arange(self.prompts).repeat(self.evaluation_samples)
        x = sample_ode(policy, prompts, self.steps, generator)
        gold, proxy = setup.rewards.gold(x, prompts), setup.rewards.proxy(x, prompts)
        out = {
            "eval_gold": float(gold.mean()),
            "eval_proxy": float(proxy.mean()),
            "eval_on_target": float((gold > 0.5).float().mean()),
        }
        if self.dataset == "digits":
            for i in range(IMAGE_SAMPLES * self.prompts):
                for pixel in range(x.shape[1]):
                    out[f"image_{i}_{pixel}"] = float(x[i, pixel])
            return out
        for i in range(PICTURE_SAMPLES * self.prompts):
            out[f"sample_{i}_x"], out[f"sample_{i}_y"] = float(x[i, 0]), float(x[i, 1])
        return out

    def report(self, results: RunResults) -> str:
        return flow_report(self, results)


# ---------------------------------------------------------------------- report
def final_mean(values: np.ndarray) -> float:
    """Mean over the last 10 % of updates."""
    tail = max(1, len(values) // 10)
    return float(np.mean(values[-tail:]))


def samples_to(results: RunResults, method: str, seed: int, target: float) -> float:
    """Samples at which the smoothed gold reward of ``method`` first reaches ``target``."""
    run = results.run(method, seed)
    gold = trailing_mean(np.array([r["gold_reward"] for r in run], dtype=float), SMOOTHING)
    return float(first_reaching(np.array([r["samples"] for r in run]), gold, target))


def scatter_picture(world: FlowWorld, results: RunResults) -> str:
    """A PNG (base64) of each method's held-out samples, first seed, over the targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = results.methods
    figure, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3.3), dpi=90)
    axes = np.atleast_1d(axes)
    data = Mixture(world.prompts, world.target_weight)
    targets, others = data.targets().numpy(), data.others().numpy()
    for axis, method in zip(axes, methods, strict=True):
        row = next(e for e in results.evaluations if e["method"] == method)
        count = PICTURE_SAMPLES * world.prompts
        xs = np.array([row.get(f"sample_{i}_x", np.nan) for i in range(count)])
        ys = np.array([row.get(f"sample_{i}_y", np.nan) for i in range(count)])
        colours = np.arange(count) % world.prompts
        axis.scatter(
            others[:, 0], others[:, 1], marker="o", s=120, facecolors="none", edgecolors="grey"
        )
        axis.scatter(targets[:, 0], targets[:, 1], marker="*", s=160, c="black")
        axis.scatter(xs, ys, c=colours, cmap="tab10", s=10, vmin=0, vmax=9)
        axis.set_title(method, fontsize=9)
        axis.set_aspect("equal")
        limit = max(3.0, float(np.nanmax(np.abs(np.r_[xs, ys]))) + 0.3)
        axis.set_xlim(-limit, limit)
        axis.set_ylim(-limit, limit)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def image_grid_picture(world: FlowWorld, results: RunResults) -> str:
    """A PNG (base64): per method (rows), the first seed's held-out images, ``IMAGE_SAMPLES``
    per prompt (columns: digit 0's, then digit 1's, ...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = results.methods
    count = IMAGE_SAMPLES * world.prompts
    figure, axes = plt.subplots(
        len(methods), count, figsize=(0.55 * count + 1.5, 0.6 * len(methods) + 0.3), dpi=90
    )
    axes = np.atleast_2d(axes)
    for row_axes, method in zip(axes, methods, strict=True):
        row = next(e for e in results.evaluations if e["method"] == method)
        # evaluation samples run prompt 0, 1, ..., prompts - 1, 0, 1, ...: order by prompt
        order = sorted(range(count), key=lambda i: (i % world.prompts, i))
        for axis, i in zip(row_axes, order, strict=True):
            pixels = np.array([row.get(f"image_{i}_{p}", np.nan) for p in range(64)])
            axis.imshow(pixels.reshape(8, 8), cmap="gray_r", vmin=-1, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
        row_axes[0].set_ylabel(method, rotation=0, ha="right", va="center", fontsize=8)
    figure.tight_layout(pad=0.2)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def flow_report(world: FlowWorld, results: RunResults) -> str:
    baseline = results.methods[0]
    target = float(
        np.mean(
            [
                final_mean(np.array([r["gold_reward"] for r in results.run(baseline, s)]))
                for s in results.seeds
            ]
        )
    )
    lines = [
        f"World `{world.label()}`, Flow-GRPO for {results.budget:,} samples per run, seeds "
        f"{', '.join(map(str, results.seeds))}. Wall time {results.wall:.0f} s. *final* is the "
        "mean over the last 10 % of updates of the training samples' reward; *samples to target* "
        f"is the median over seeds of the first sample count where the gold reward (smoothed over "
        f"{SMOOTHING} updates) reaches `{baseline}`'s final gold reward ({target:.3f}); *held-out* "
        f"is {world.evaluation_samples} ODE samples per prompt from fixed noise.",
        "",
        "| method | final gold | final proxy | final KL | samples to target | vs "
        f"{baseline} | held-out gold | on target | seconds per run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = float(np.median([samples_to(results, baseline, s, target) for s in results.seeds]))
    for method in results.methods:
        finals = {
            key: np.array(
                [
                    final_mean(np.array([r[key] for r in results.run(method, s)], dtype=float))
                    for s in results.seeds
                ]
            )
            for key in ("gold_reward", "proxy_reward", "kl")
        }
        reached = np.array([samples_to(results, method, s, target) for s in results.seeds])
        median = float(np.median(reached))
        ratio = f"{median / base:.2f}x" if np.isfinite(median) and np.isfinite(base) else "-"
        evaluations = [e for e in results.evaluations if e["method"] == method]
        held_gold = np.mean([e["eval_gold"] for e in evaluations])
        on_target = np.mean([e["eval_on_target"] for e in evaluations])
        seconds = np.mean([results.seconds[(method, s)] for s in results.seeds])
        reached_text = f"{median:,.0f}" if np.isfinite(median) else f"> {results.budget:,}"
        lines.append(
            f"| {method} | {finals['gold_reward'].mean():.3f} ± {finals['gold_reward'].std():.3f} "
            f"| {finals['proxy_reward'].mean():.3f} | {finals['kl'].mean():.2f} | "
            f"{reached_text} ({int(np.isfinite(reached).sum())}/{reached.size}) | {ratio} | "
            f"{held_gold:.3f} | {on_target:.2f} | {seconds:.1f} |"
        )
    lines += [
        "",
        "![gold reward](gold_reward.png)",
        "",
        "![proxy reward](proxy_reward.png)",
        "",
        "![KL to the initial policy](kl.png)",
        "",
        *(
            [
                f"Held-out ODE images of each method (first seed; {IMAGE_SAMPLES} per prompt, "
                "digits 0, 1, ... left to right):",
                "",
                f"![samples](data:image/png;base64,{image_grid_picture(world, results)})",
            ]
            if world.dataset == "digits"
            else [
                "Held-out ODE samples of each method (first seed; colour = prompt, ★ = the "
                "prompt's target mode, ○ = its other mode):",
                "",
                f"![samples](data:image/png;base64,{scatter_picture(world, results)})",
            ]
        ),
        "",
        "Files: `config.yaml` (resolved recipe), `metrics.parquet` (one row per update per run), "
        "`evaluation.parquet` (held-out samples per run), `checkpoints/` (velocity fields).",
        "",
    ]
    return "\n".join(lines)


__all__ = ["FlowGRPOConfig", "FlowSetup", "FlowWorld", "flow_report"]
