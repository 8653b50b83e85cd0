"""densereward in verl: advantage estimators registered through the ``verl.plugins`` entry point,
and a reward manager that writes step rewards at step-end tokens.

Installing densereward with verl adds the entry point ``densereward = densereward.adapters.verl``
to the group ``verl.plugins``; ``import verl`` imports this module in every process (Ray workers
included), which registers:

=========================== ================================================================
``algorithm.adv_estimator`` densereward estimator on verl's ``[B, T]`` batch
=========================== ================================================================
``densereward_grpo``        GRPO (``norm_adv_by_std_in_grpo=False``: Dr.GRPO), outcome level
``densereward_rloo``        RLOO, outcome level
``densereward_reinforce_pp`` REINFORCE++ over masked tokens, ``algorithm.gamma``
``densereward_step_grpo``   step-level GRPO on step rewards at step-end tokens
``densereward``             any registered estimator, ``+algorithm.densereward.estimator``
=========================== ================================================================

verl's own ``gae`` and ``grpo`` are dispatched by name before the registry and never reach it;
nothing here uses those names. verl passes a registered estimator ``token_level_rewards``,
``response_mask``, ``config`` (the ``algorithm`` node) and ``index`` (the ``uid`` per row) only —
no values, so GAE cannot be a registered estimator: :func:`densereward.adapters.padded.padded_gae`
is the same computation for callers that hold the values.

Step rewards reach a step-level estimator inside ``token_level_rewards`` (in the v1 trainer the
advantage step reads no other per-token field): each step's reward at its last token, a zero
step reward written as ``ZERO_STEP_REWARD`` (see ``adapters/padded.py``). Step-level estimators
refuse ``use_kl_in_reward`` (a KL penalty on every token would make every token a step end).
Parameters ride under ``algorithm.densereward``::

    algorithm.adv_estimator=densereward_step_grpo \\
    +algorithm.densereward.gamma=0.0 +algorithm.densereward.scope=group

The reward side: :class:`DenseRewardManager` (``reward.reward_manager.name=densereward`` in verl's
reward loop) runs a densereward recipe's signals on each response and
:func:`step_reward_tensor` places the step rewards at the response's step-end tokens.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from densereward.adapters.padded import (
    ZERO_STEP_REWARD,
    padded_estimate,
    padded_grpo,
    padded_reinforce_pp,
    padded_rloo,
)
from densereward.core.errors import ConfigError
from densereward.core.registry import build

PREFIX = "densereward"


def options(config: Any) -> dict[str, Any]:
    """``algorithm.densereward`` as a plain dict (DictConfig, verl's AlgoConfig or a mapping)."""
    if config is None:
        return {}
    node = config.get(PREFIX) if hasattr(config, "get") else None
    if node is None:
        return {}
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(node, DictConfig):
            return dict(OmegaConf.to_container(node, resolve=True))  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - verl always brings omegaconf
        pass
    if not isinstance(node, Mapping):
        raise ConfigError(f"algorithm.{PREFIX}", f"must be a mapping, got {node!r}")
    return dict(node)


def _setting(config: Any, name: str, default: Any) -> Any:
    value = config.get(name, default) if config is not None and hasattr(config, "get") else None
    return default if value is None else value


def _refuse_kl_in_reward(config: Any, estimator: str) -> None:
    if bool(_setting(config, "use_kl_in_reward", False)):
        raise ConfigError(
            "algorithm.use_kl_in_reward",
            f"{estimator} reads step ends from the rewards, which a per-token KL penalty makes "
            "nonzero everywhere: use the actor's KL loss (actor_rollout_ref.actor.use_kl_loss)",
        )


def grpo_advantage(
    token_level_rewards: Tensor,
    response_mask: Tensor,
    index: np.ndarray | None = None,
    config: Any = None,
    **_: Any,
) -> tuple[Tensor, Tensor]:
    """``densereward_grpo``: GRPO, or Dr.GRPO with ``norm_adv_by_std_in_grpo=False``;
    ``algorithm.densereward.eps`` (1e-6, as verl)."""
    settings = options(config)
    return padded_grpo(
        token_level_rewards,
        response_mask,
        index,
        eps=float(settings.get("eps", 1e-6)),
        scale=bool(_setting(config, "norm_adv_by_std_in_grpo", True)),
    )


def rloo_advantage(
    token_level_rewards: Tensor,
    response_mask: Tensor,
    index: np.ndarray | None = None,
    config: Any = None,
    **_: Any,
) -> tuple[Tensor, Tensor]:
    """``densereward_rloo``: RLOO."""
    return padded_rloo(token_level_rewards, response_mask, index)


def reinforce_pp_advantage(
    token_level_rewards: Tensor,
    response_mask: Tensor,
    config: Any = None,
    **_: Any,
) -> tuple[Tensor, Tensor]:
    """``densereward_reinforce_pp``: REINFORCE++ with ``algorithm.gamma``."""
    return padded_reinforce_pp(
        token_level_rewards, response_mask, gamma=float(_setting(config, "gamma", 1.0))
    )


def step_grpo_advantage(
    token_level_rewards: Tensor,
    response_mask: Tensor,
    index: np.ndarray | None = None,
    config: Any = None,
    **_: Any,
) -> tuple[Tensor, Tensor]:
    """``densereward_step_grpo``: step-level GRPO on the step rewards at step-end tokens
    (``algorithm.densereward``: ``gamma``, ``eps``, ``scope``)."""
    _refuse_kl_in_reward(config, "densereward_step_grpo")
    settings = {"kind": "step_grpo", "process": "reward", **options(config)}
    estimator = build("estimator", settings, f"algorithm.{PREFIX}")
    return padded_estimate(estimator, token_level_rewards, response_mask, index)


def any_advantage(
    token_level_rewards: Tensor,
    response_mask: Tensor,
    index: np.ndarray | None = None,
    config: Any = None,
    **_: Any,
) -> tuple[Tensor, Tensor]:
    """``densereward``: the estimator ``algorithm.densereward.estimator`` names (a recipe's
    ``estimator:`` mapping, e.g. ``{kind: prof, process: reward, keep: 6}``) on the step-level
    batch; its step column is ``reward``."""
    _refuse_kl_in_reward(config, "densereward")
    spec = options(config).get("estimator")
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"algorithm.{PREFIX}.estimator",
            "missing: name a densereward estimator, e.g. "
            f"+algorithm.{PREFIX}.estimator.kind=step_grpo",
        )
    estimator = build("estimator", dict(spec), f"algorithm.{PREFIX}.estimator")
    return padded_estimate(estimator, token_level_rewards, response_mask, index)


ESTIMATORS = {
    f"{PREFIX}_grpo": grpo_advantage,
    f"{PREFIX}_rloo": rloo_advantage,
    f"{PREFIX}_reinforce_pp": reinforce_pp_advantage,
    f"{PREFIX}_step_grpo": step_grpo_advantage,
    PREFIX: any_advantage,
}


def register_estimators() -> None:
    """Register :data:`ESTIMATORS` in verl's registry (idempotent: the same functions again are
    accepted by ``register_adv_est``)."""
    from verl.trainer.ppo.core_algos import register_adv_est

    for name, function in ESTIMATORS.items():
        register_adv_est(name)(function)


def step_reward_tensor(
    step_rewards: Tensor, step_ends: Tensor, rows: Tensor, shape: tuple[int, int]
) -> Tensor:
    """``[B, T]`` float32 rewards with each step's reward at its end token (``rows[k]``,
    ``step_ends[k]``); a zero step reward is written as ``ZERO_STEP_REWARD`` so that it still
    ends a step.

    >>> step_reward_tensor(torch.tensor([0.5, 0.0]), torch.tensor([1, 3]), torch.tensor([0, 0]),
    ...                    (1, 4)).tolist()[0][:2]
    [0.0, 0.5]
    """
    out = torch.zeros(shape, dtype=torch.float32)
    values = step_rewards.to(torch.float32)
    values = torch.where(values == 0, ZERO_STEP_REWARD, values)
    out.index_put_((rows.long(), step_ends.long()), values, accumulate=True)
    return out


class StepScore(float):
    """A response's total reward (what verl logs and what its float consumers read) carrying the
    step rewards and the response positions of their end tokens, for
    ``DenseRewardManager.assemble_rm_scores``; pickles across Ray workers."""

    rewards: tuple[float, ...]
    ends: tuple[int, ...]

    def __new__(cls, total: float, rewards: list[float], ends: list[int]) -> StepScore:
        score = super().__new__(cls, total)
        score.rewards, score.ends = tuple(rewards), tuple(ends)
        return score

    def __reduce__(self) -> tuple[Any, ...]:
        return StepScore, (float(self), list(self.rewards), list(self.ends))


def _reward_manager_class() -> type | None:
    """verl's reward-loop manager, registered as ``densereward``, if this verl has the loop."""
    try:
        from verl.experimental.reward_loop.reward_manager import register
        from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
    except ImportError:  # pragma: no cover - verl 0.9.1 has it
        return None

    from densereward.adapters.text import TextScorer, decode_with_ends, step_end_tokens

    @register(PREFIX)
    class DenseRewardManager(RewardManagerBase):
        """Runs a densereward recipe's signals on each response: ``reward.reward_manager.name=
        densereward`` with ``+reward.densereward.recipe=R.yaml`` and, as needed,
        ``+reward.densereward.{tokenizer,models,outcome,step_tag}`` (the tokenizer folder, default
        the policy's; process-reward-model folders by signal name; the outcome function's import
        path — without one, verl's ``compute_score`` for the data source grades the response).
        ``reward_score`` is the total; :meth:`assemble_rm_scores` writes each step's reward at its
        end token (the outcome with the last step's).
        """

        def __init__(self, config: Any, tokenizer: Any, compute_score: Any = None, **_: Any):
            super().__init__(config, tokenizer, compute_score)
            settings = options(config.get("reward") if hasattr(config, "get") else None)
            if "recipe" not in settings:
                raise ConfigError("reward.densereward.recipe", "name the densereward recipe to run")
            self.scorer = TextScorer.from_files(
                settings["recipe"],
                settings.get("tokenizer") or tokenizer.name_or_path,
                models=settings.get("models") or {},
                outcome=settings.get("outcome"),
                step_tag=settings.get("step_tag", "\n"),
            )

        async def run_single(self, data: Any) -> dict[str, Any]:
            item = data[0]
            response_ids = item.batch["responses"]
            length = int(item.batch["attention_mask"][-response_ids.shape[-1] :].sum())
            texts, ends = decode_with_ends(self.tokenizer, [response_ids[:length].tolist()])
            tokenizer: Any = self.tokenizer
            prompt = tokenizer.decode(item.batch["prompts"], skip_special_tokens=True)
            label = (item.non_tensor_batch.get("reward_model") or {}).get("ground_truth")
            if self.scorer.outcome is None and self.compute_score is not None:
                graded = self.compute_score(
                    data_source=item.non_tensor_batch.get("data_source"),
                    solution_str=texts[0],
                    ground_truth=label,
                    extra_info=item.non_tensor_batch.get("extra_info"),
                )
                if inspect.isawaitable(graded):
                    graded = await graded
                outcome = float(graded["score"] if isinstance(graded, Mapping) else graded)
                scored = self.scorer([prompt], texts, [label], outcome=[outcome])
            else:
                scored = self.scorer([prompt], texts, [label])
            rewards = scored.per_response()[0]
            rewards[-1] += float(scored.outcome[0])
            positions = step_end_tokens(ends[0], scored.char_ends).tolist()
            return {
                "reward_score": StepScore(float(scored.totals[0]), rewards, positions),
                "reward_extra_info": {"steps": len(rewards)},
            }

        @classmethod
        def assemble_rm_scores(cls, data: Any, scores: list[float]) -> Tensor:
            out = super().assemble_rm_scores(data, [float(s) for s in scores])
            stepped = [i for i, s in enumerate(scores) if isinstance(s, StepScore)]
            if not stepped:
                return out
            out[stepped] = 0.0
            rows = torch.tensor([i for i in stepped for _ in scores[i].ends])  # type: ignore[attr-defined]
            ends = torch.tensor([e for i in stepped for e in scores[i].ends])  # type: ignore[attr-defined]
            values = torch.tensor([r for i in stepped for r in scores[i].rewards])  # type: ignore[attr-defined]
            return out + step_reward_tensor(values, ends, rows, (out.shape[0], out.shape[1]))

    return DenseRewardManager


register_estimators()
DenseRewardManager = _reward_manager_class()
