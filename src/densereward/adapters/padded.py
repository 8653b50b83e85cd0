"""Estimators on the layout verl, TRL and OpenRLHF hand over: ``[B, T]`` rewards + response mask.

Every function takes ``token_rewards`` ``[B, T]`` (the reward earned at each response token), a
``response_mask`` ``[B, T]`` (float, int or bool; holes — tool or observation tokens inside a
response — allowed) and, for group estimators, ``groups`` (one label per row: verl's ``uid``
array of strings, or integers), and returns ``(advantages, returns)`` ``[B, T]``, zero outside the
mask. Tokens under a hole are skipped: the token after a hole follows the token before it
directly (verl's own convention for multi-turn masks).

The conversion costs one pass over the mask. Outcome-level estimators never leave the padded
layout (a masked row sum, group statistics over ``B`` scores, one broadcast); token-level ones
take the masked tokens flat (``values[mask]``, in row order: exactly the tokens a ragged batch
would hold), scan them with densereward's segmented kernels and scatter back with the same mask.

**Steps in a token row** (``step_boundaries``): a step ends at every masked token whose reward is
nonzero, at the last token of every masked span (a turn's end) and at each row's last masked
token; its reward is the value at its end token. A step whose reward is exactly zero would merge
into the next one, so the reward side writes it as :data:`ZERO_STEP_REWARD` (the smallest
normal float32, ``1.2e-38``: a marker that is zero in every statistic). verl's ``.sum(-1)`` of a
row is still the response's total reward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from densereward.core.components import Estimator
from densereward.core.errors import NonFiniteError, ValidationError
from densereward.core.segments import (
    Groups,
    Segments,
    discounted_reverse_cumsum,
    next_in_segment,
)
from densereward.core.trajectories import GROUP, Trajectories
from densereward.pipeline import checked_estimate

ZERO_STEP_REWARD = float(torch.finfo(torch.float32).tiny)
"""How a step-end token whose step earned exactly 0 is written, so that it still ends a step."""


def check_padded(
    token_rewards: Tensor, response_mask: Tensor, name: str = "token_level_rewards"
) -> Tensor:
    """The mask as bool, after checking shapes and that every value under it is finite."""
    check_shapes(token_rewards, response_mask)
    keep = response_mask if response_mask.dtype == torch.bool else response_mask != 0
    bad = ~torch.isfinite(token_rewards) & keep
    if bool(bad.any()):
        row, column = (int(i) for i in torch.nonzero(bad)[0])
        raise ValidationError(
            name, f"row {row}, token {column}: {float(token_rewards[row, column])} is not finite"
        )
    return keep


def group_index(groups: Sequence[Any] | np.ndarray | Tensor | None, rows: int) -> Groups:
    """``Groups`` from one label per row (strings, as verl's ``uid``, or integers)."""
    if groups is None:
        raise ValidationError("index", "a group estimator needs one group label per row (uid)")
    if isinstance(groups, Tensor):
        labels = groups
    else:
        array = np.asarray(groups)
        if array.dtype.kind in "iub":
            labels = torch.as_tensor(array.astype(np.int64))
        else:
            labels = torch.as_tensor(np.unique(array, return_inverse=True)[1].astype(np.int64))
    if labels.shape != (rows,):
        raise ValidationError("index", f"has {labels.shape[0]} labels for {rows} rows")
    return Groups.from_labels(labels)


def check_shapes(token_rewards: Tensor, response_mask: Tensor, name: str = "response_mask") -> None:
    if token_rewards.ndim != 2:
        raise ValidationError(
            "token_level_rewards", f"must be [batch, tokens], got {list(token_rewards.shape)}"
        )
    if tuple(response_mask.shape) != tuple(token_rewards.shape):
        raise ValidationError(
            name, f"has shape {list(response_mask.shape)}, the rewards {list(token_rewards.shape)}"
        )


def check_outputs(rewards: Callable[[], Tensor], *outputs: Tensor) -> None:
    """Every output finite (one sum each; ``rewards`` is evaluated only to name a row): finite rewards can still overflow a sum or a return
    (3e38 + 3e38 in float32), and nothing non-finite may reach a policy loss. The row named is
    the first whose absolute rewards sum past the dtype's range (a return can only overflow
    there; the blocked scan may carry the resulting NaN into neighbouring rows)."""
    for output in outputs:
        if not bool(torch.isfinite(output.sum())):
            overflowing = ~torch.isfinite(rewards().abs().sum(-1))
            row = int(torch.nonzero(overflowing)[0, 0]) if bool(overflowing.any()) else 0
            raise NonFiniteError(
                "token_level_rewards",
                f"row {row}: the rewards' sums overflow {str(output.dtype).replace('torch.', '')}",
            )


def masked(values: Tensor, response_mask: Tensor, name: str) -> Tensor:
    """``values`` with every token outside the mask set to 0, in one multiply (a new tensor: the
    caller's is never written). Its sum is not finite exactly when a token is not (or the sum
    overflows): only then are the tokens looked at, to name a non-finite one under the mask or, if
    the culprits lie outside it, to zero them without multiplying (``nan * 0`` is NaN)."""
    out = values * response_mask
    if not bool(torch.isfinite(out.sum())):
        keep = check_padded(values, response_mask, name)
        out = torch.where(keep, values, 0.0)
    return out


def _outcome_level(
    token_rewards: Tensor,
    response_mask: Tensor,
    groups: Sequence[Any] | np.ndarray | Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Groups]:
    """``(Σ_t mask_t r_t per row, a spare [B, T] buffer, the mask in the rewards' dtype,
    groups)``: a conversion, one multiply and a row sum. (Every ``[B, T]`` operation runs in one
    dtype: torch's mixed int/float kernels are ten times slower.)"""
    weights = mask_weights(token_rewards, response_mask)
    product = masked(token_rewards, weights, "token_level_rewards")
    scores = product.sum(-1)
    check_outputs(lambda: product, scores)
    return scores, product, weights, group_index(groups, product.shape[0])


def mask_weights(token_rewards: Tensor, response_mask: Tensor) -> Tensor:
    """The mask in the rewards' dtype after checking it: every ``[B, T]`` operation then runs in
    one dtype (torch's mixed int/float kernels are ten times slower). A new tensor unless the
    mask had that dtype already (then it is the caller's, never written)."""
    check_shapes(token_rewards, response_mask)
    weights = response_mask.to(token_rewards.dtype)
    if weights.numel():
        low, high = torch.aminmax(weights)
        exact = response_mask.dtype == torch.bool or not response_mask.is_floating_point()
        if (
            float(low) < 0
            or float(high) > 1
            or (not exact and not bool(((weights == 0) | (weights == 1)).all()))
        ):
            raise ValidationError("response_mask", "must hold only 0 and 1")
    return weights


def _outputs(
    advantage: Tensor, scores: Tensor, spare: Tensor, weights: Tensor, response_mask: Tensor
) -> tuple[Tensor, Tensor]:
    """``(A_i · mask, R_i · mask)`` written into memory this call already owns (``spare``, and the
    converted mask when it is not the caller's): fresh memory costs more than the multiply."""
    advantages = torch.mul(advantage.unsqueeze(-1), weights, out=spare)
    if weights is response_mask:
        return advantages, scores.unsqueeze(-1) * weights
    return advantages, weights.mul_(scores.unsqueeze(-1))


def padded_grpo(
    token_rewards: Tensor,
    response_mask: Tensor,
    groups: Sequence[Any] | np.ndarray | Tensor | None,
    eps: float = 1e-6,
    scale: bool = True,
    unbiased_std: bool = True,
) -> tuple[Tensor, Tensor]:
    """GRPO / Dr.GRPO: ``A_i = (R_i - mean_g R) / (std_g R + eps)`` (``scale=False``: no
    division) with ``R_i = Σ_t mask_t r_t``, broadcast over the row's masked tokens; returns
    ``R_i`` broadcast. A group of one or of equal scores gets 0
    (``estimators.group.estimate_grpo``). The mask holds 0 and 1 (float, int or bool)."""
    scores, spare, weights, index = _outcome_level(token_rewards, response_mask, groups)
    if scale:
        advantage = index.zscore(scores, eps, unbiased_std)
    else:
        advantage = (scores - index.mean(scores)[index.index]).masked_fill(
            index.is_constant(scores), 0.0
        )
    return _outputs(advantage, scores, spare, weights, response_mask)


def padded_rloo(
    token_rewards: Tensor,
    response_mask: Tensor,
    groups: Sequence[Any] | np.ndarray | Tensor | None,
) -> tuple[Tensor, Tensor]:
    """RLOO: ``A_i = R_i - mean_{j != i in g} R_j``, broadcast; 0 for a group of one."""
    scores, spare, weights, index = _outcome_level(token_rewards, response_mask, groups)
    advantage = scores - index.leave_one_out_mean(scores)
    return _outputs(advantage, scores, spare, weights, response_mask)


def padded_reinforce_pp(
    token_rewards: Tensor, response_mask: Tensor, gamma: float = 1.0, eps: float = 1e-8
) -> tuple[Tensor, Tensor]:
    """REINFORCE++: ``G_t = Σ_{s ≥ t} γ^(s - t) r_s`` over each row's masked tokens, whitened
    over every masked token of the batch: ``A = (G - mean G) / (std G + eps)``."""
    weights = mask_weights(token_rewards, response_mask)
    rewards = masked(token_rewards, weights, "token_level_rewards")
    if gamma == 1.0:
        # G_t = r_t + Σ_row r - Σ_{s≤t} r_s; a hole's tokens hold 0 and change no sum
        running = rewards.cumsum(-1)
        check_outputs(lambda: running, running)  # the row totals are its last column
        returns = rewards.sub_(running).add_(running[:, -1:]).mul_(weights)
        check_outputs(lambda: running, returns)
        return _whiten_masked(returns, weights, eps, out=running), returns
    if is_prefix(weights):
        returns = _row_scan(rewards, gamma).mul_(weights)
    else:
        keep = weights != 0
        flat = discounted_reverse_cumsum(rewards[keep], _row_segments(keep), gamma)
        returns = _scatter(flat, keep)
    check_outputs(lambda: rewards, returns)
    return _whiten_masked(returns, weights, eps, out=rewards), returns


def padded_gae(
    token_rewards: Tensor,
    values: Tensor,
    response_mask: Tensor,
    gamma: float = 1.0,
    lam: float = 1.0,
    whiten_advantages: bool = True,
) -> tuple[Tensor, Tensor]:
    """GAE over each row's masked tokens: ``δ_t = r_t + γ V_{t+1} - V_t`` (``V`` after the last
    token is 0: a response ends its episode), ``A_t = Σ_{s ≥ t} (γλ)^(s - t) δ_s``, returns
    ``A_t + V_t``; advantages whitened over the batch's masked tokens when ``whiten_advantages``
    (what verl's ``compute_gae_advantage_return`` does; densereward's PPO normalises per
    minibatch instead)."""
    check_shapes(token_rewards, values, "values")
    weights = mask_weights(token_rewards, response_mask)
    values = values.to(token_rewards.dtype)
    delta = None
    if is_prefix(weights):
        # δ_t = r_t + γ V_{t+1} w_{t+1} - V_t, zero outside the mask, built in one buffer
        delta = torch.empty_like(values)
        torch.mul(values[:, 1:], weights[:, 1:], out=delta[:, :-1])
        delta[:, -1] = 0.0
        delta.mul_(gamma).add_(token_rewards).sub_(values).mul_(weights)
        if not bool(torch.isfinite(delta.sum())):
            delta = None  # a non-finite value somewhere: the masked path below names or drops it
    rewards = masked(token_rewards, weights, "token_level_rewards") if delta is None else None
    if delta is not None:
        advantages = _row_scan(delta, gamma * lam)
        returns = torch.addcmul(advantages, values, weights)
    else:
        assert rewards is not None
        values = masked(values, weights, "values")
        keep = weights != 0
        segments = _row_segments(keep)
        flat_values = values[keep]
        flat_delta = rewards[keep] + gamma * next_in_segment(flat_values, segments) - flat_values
        advantages = _scatter(discounted_reverse_cumsum(flat_delta, segments, gamma * lam), keep)
        returns = advantages + values
    check_outputs(lambda: token_rewards * weights, advantages, returns)
    if whiten_advantages:
        advantages = _whiten_masked(advantages, weights, 1e-8)
    return advantages, returns


def is_prefix(weights: Tensor) -> bool:
    """Whether every row of a 0/1 mask is a run of ones from the first token (no holes).

    A row with ``n`` ones has ``Σ_t t·w_t ≥ n(n-1)/2``, with equality exactly when the ones are
    the first ``n`` positions: one matrix-vector product instead of a comparison per token (exact
    in float32 while the sums stay below 2^24, i.e. rows up to 4096 tokens; longer ones compare).
    """
    width = weights.shape[1]
    if width <= 4096 and weights.dtype in (torch.float32, torch.float64):
        position = torch.arange(width, dtype=weights.dtype, device=weights.device)
        count = weights.sum(1)
        return bool((torch.mv(weights, position) == count * (count - 1) / 2).all())
    return bool((weights[:, 1:] <= weights[:, :-1]).all())


def _row_scan(x: Tensor, gamma: float) -> Tensor:
    """``y_t = Σ_{s ≥ t} γ^(s - t) x_s`` along each row of ``[B, T]`` (rows of equal length:
    densereward's blocked scan on the padded layout itself, no gather)."""
    rows, width = x.shape
    offsets = torch.arange(rows + 1, device=x.device, dtype=torch.int64) * width
    flat = discounted_reverse_cumsum(x.reshape(-1), Segments(offsets), gamma)
    return flat.view(rows, width)


def _whiten_masked(
    x: Tensor, response_mask: Tensor, eps: float, out: Tensor | None = None
) -> Tensor:
    """``(x - mean) / (std + eps) · mask`` with mean and unbiased std over the masked tokens
    (``x`` is 0 outside the mask), into ``out`` (default: in place)."""
    count = response_mask.sum().to(x.dtype)
    mean = x.sum() / count
    centred = torch.sub(x, mean, out=x if out is None else out).mul_(response_mask)
    variance = torch.dot(centred.view(-1), centred.view(-1)) / (count - 1).clamp(min=1)
    return centred.div_(variance.sqrt() + eps)


def step_boundaries(token_rewards: Tensor, keep: Tensor) -> Tensor:
    """``[B, T]`` bool: the tokens where a step ends (see the module docstring)."""
    ends = token_rewards != 0
    ends[:, :-1] |= ~keep[:, 1:]  # the next token is not the response's: a turn (or row) ends
    ends[:, -1] = True
    return ends.logical_and_(keep)


def step_trajectories(
    token_rewards: Tensor,
    response_mask: Tensor,
    groups: Sequence[Any] | np.ndarray | Tensor | None = None,
    reward: str = "reward",
) -> tuple[Trajectories, Tensor, Tensor]:
    """The step-level batch of a token row layout: one step per step-end token, its reward in the
    step column ``reward``; also the mask in the rewards' dtype and, for every token ``[B, T]``,
    the step it belongs to (the number of step ends before it in row-major order: right for every
    masked token, meaningless elsewhere), to spread step values back onto tokens without leaving
    the padded layout."""
    weights = mask_weights(token_rewards, response_mask)
    rewards = masked(token_rewards, weights, "token_level_rewards")
    ends = step_boundaries(rewards, weights != 0)
    flat_ends = ends.view(-1)
    # the step of token t is the number of step ends before it: the running count, shifted
    index_dtype = torch.int32 if flat_ends.numel() < 2**31 else torch.int64
    running = torch.cumsum(flat_ends, 0, dtype=index_dtype)
    step_of_token = torch.nn.functional.pad(running[:-1], (1, 0)).view(ends.shape)
    offsets = torch.zeros(ends.shape[0] + 1, dtype=torch.int64, device=ends.device)
    torch.cumsum(ends.sum(1), 0, out=offsets[1:])
    episodes = {}
    if groups is not None:
        episodes[GROUP] = group_index(groups, ends.shape[0]).index
    batch = Trajectories(offsets, {reward: rewards.view(-1)[flat_ends]}, episodes, trusted=True)
    return batch, weights, step_of_token


def padded_estimate(
    estimator: Estimator,
    token_rewards: Tensor,
    response_mask: Tensor,
    groups: Sequence[Any] | np.ndarray | Tensor | None = None,
    reward: str = "reward",
) -> tuple[Tensor, Tensor]:
    """Any registered estimator on the step-level batch of ``token_rewards``; every token gets the
    advantage and return of the step it belongs to."""
    batch, weights, step_of_token = step_trajectories(token_rewards, response_mask, groups, reward)
    if batch.num_steps == 0:  # nothing under the mask
        return torch.zeros_like(weights), torch.zeros_like(weights)
    estimate = checked_estimate(estimator, batch)
    advantages = estimate.advantages.to(weights.dtype)
    if estimate.keep is not None:  # a selecting estimator (PROF): dropped rows get no advantage
        advantages = advantages * estimate.keep.to(advantages.dtype)[batch.segments.ids]
    # tokens after a row's last step point one past the end: clamped, then zeroed by the mask
    index = step_of_token.clamp_(max=batch.num_steps - 1).view(-1)
    returns = estimate.returns.to(weights.dtype)
    return (
        torch.index_select(advantages, 0, index).view(weights.shape).mul_(weights),
        torch.index_select(returns, 0, index).view(weights.shape).mul_(weights),
    )


def _row_segments(keep: Tensor) -> Segments:
    offsets = torch.zeros(keep.shape[0] + 1, dtype=torch.int64, device=keep.device)
    torch.cumsum(keep.sum(1), 0, out=offsets[1:])
    return Segments(offsets)


def _scatter(flat: Tensor, keep: Tensor) -> Tensor:
    return flat.new_zeros(keep.shape).masked_scatter_(keep, flat)
