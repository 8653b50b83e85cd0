"""Conversions between ``Trajectories`` and the padded layouts the ecosystem uses.

* ``[batch, tokens]`` + response mask — verl, TRL, OpenRLHF. The mask may be float, integer or
  bool, and need not be a left-aligned prefix (multi-turn masks have holes for tool output); when it
  is not, the column index of each step is kept in the step column ``position`` so that the
  conversion back is exact.
* ``[time, envs]`` rollout buffers with ``terminated``/``truncated`` flags — CleanRL, SB3,
  Gymnasium vector envs, in both autoreset conventions. The source cell of each step is kept in the
  step columns ``env`` and ``time``.

All conversions are vectorized gathers/scatters and keep device and dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor

from densereward.core.errors import ValidationError
from densereward.core.segments import Segments, expand_ranges, next_in_segment
from densereward.core.trajectories import TERMINATED, TRUNCATED, Trajectories, as_tensor

POSITION = "position"
ENV = "env"
TIME = "time"

AutoresetMode = Literal["same_step", "next_step"]


# --------------------------------------------------------------------------- [batch, tokens]
def from_padded(
    columns: Mapping[str, Tensor],
    mask: Tensor,
    episodes: Mapping[str, Tensor] | None = None,
) -> Trajectories:
    """Token-level trajectories (one step per unmasked token) from ``[batch, tokens]`` tensors.

    >>> rewards = torch.tensor([[0.0, 1.0, 9.0], [2.0, 9.0, 9.0]])
    >>> mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    >>> batch = from_padded({"reward": rewards}, mask)
    >>> batch.step("reward").tolist(), batch.lengths.tolist()
    ([0.0, 1.0, 2.0], [2, 1])
    """
    mask = as_tensor(mask, "response_mask")
    if mask.ndim != 2:
        raise ValidationError(
            "response_mask", f"must be [batch, tokens], got shape {list(mask.shape)}"
        )
    keep = mask != 0
    steps: dict[str, Tensor] = {}
    for name, column in columns.items():
        column = as_tensor(column, name, mask.device)
        if tuple(column.shape[:2]) != tuple(mask.shape):
            raise ValidationError(
                name, f"has shape {list(column.shape)}, the response mask {list(mask.shape)}"
            )
        steps[name] = column[keep]
    lengths = keep.sum(1)
    offsets = torch.zeros(mask.shape[0] + 1, dtype=torch.int64, device=mask.device)
    torch.cumsum(lengths, 0, out=offsets[1:])
    row, column_index = torch.nonzero(keep, as_tuple=True)
    left_aligned = bool(
        (column_index == torch.arange(row.shape[0], device=mask.device) - offsets[:-1][row]).all()
    )
    if not left_aligned:
        steps[POSITION] = column_index
    return Trajectories(offsets, steps, dict(episodes or {}))


def pad_segments(
    values: Tensor,
    segments: Segments,
    width: int | None = None,
    pad: float = 0.0,
    columns: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``[steps, ...] -> ([segments, width, ...] values, [segments, width] bool mask)``.

    Element ``t`` of segment ``i`` lands in row ``i`` at ``columns[t]`` (default: its position in
    the segment, i.e. left-aligned); ``width`` defaults to the narrowest that fits.
    """
    columns = segments.positions if columns is None else columns
    needed = int(columns.max()) + 1 if columns.numel() else 0
    width = needed if width is None else width
    if width < needed:
        raise ValidationError(
            "width", f"{width} is too narrow for the longest trajectory ({needed})"
        )
    flat_index = segments.ids * width + columns
    out = values.new_full((segments.count * width, *values.shape[1:]), pad)
    out[flat_index] = values
    mask = torch.zeros(segments.count * width, dtype=torch.bool, device=values.device)
    mask[flat_index] = True
    return out.view(segments.count, width, *values.shape[1:]), mask.view(segments.count, width)


def to_padded(
    batch: Trajectories, values: Tensor, width: int | None = None, pad: float = 0.0
) -> tuple[Tensor, Tensor]:
    """``([batch, width] values, [batch, width] bool mask)`` from a per-step tensor.

    Steps land at their ``position`` column if the batch has one, else left-aligned.
    """
    return pad_segments(values, batch.segments, width, pad, batch.steps.get(POSITION))


def broadcast_to_tokens(
    batch: Trajectories, step_values: Tensor, width: int | None = None, pad: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Spread each step's value over the tokens of its span: ``[steps] -> [batch, width]``.

    Uses ``batch.token_spans`` (``[start, end)`` per step, in each trajectory's token row). Tokens
    outside every span get ``pad`` and a false mask.

    >>> batch = Trajectories.from_episodes({"r": [[1.0, 2.0]]}, token_spans=[[[0, 2], [2, 5]]])
    >>> broadcast_to_tokens(batch, batch.step("r"))[0].tolist()
    [[1.0, 1.0, 2.0, 2.0, 2.0]]
    """
    spans = batch.token_spans
    if spans is None:
        raise ValidationError("token_spans", "this batch has no token spans to broadcast onto")
    counts = spans[:, 1] - spans[:, 0]
    needed = int(spans[:, 1].max()) if spans.numel() else 0
    width = needed if width is None else width
    if width < needed:
        raise ValidationError("width", f"{width} is too narrow for the last token span ({needed})")
    tokens, step_of_token = expand_ranges(spans[:, 0], counts)
    flat_index = batch.segments.ids[step_of_token] * width + tokens
    out = step_values.new_full((len(batch) * width,), pad)
    out[flat_index] = step_values[step_of_token]
    mask = torch.zeros(len(batch) * width, dtype=torch.bool, device=spans.device)
    mask[flat_index] = True
    return out.view(len(batch), width), mask.view(len(batch), width)


# --------------------------------------------------------------------------- [time, envs]
def from_rollout_buffer(
    rewards: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    columns: Mapping[str, Tensor] | None = None,
    autoreset: AutoresetMode = "same_step",
    previous_done: Tensor | None = None,
) -> Trajectories:
    """Trajectories from ``[time, envs]`` buffers, keeping terminated and truncated apart.

    ``autoreset`` is the vector env's convention:

    * ``"same_step"`` (SB3 ``VecEnv``, Gymnasium ``AutoresetMode.SAME_STEP``): the step that ends
      an episode is followed directly by the next episode's first step.
    * ``"next_step"`` (Gymnasium >= 1.0 default): the step after an episode's end only resets the
      env; its action is ignored and its reward is 0. Those reset steps are dropped here.
      ``previous_done[env]`` says whether row 0 is such a reset step (the env ended an episode on
      the last step of the previous buffer).

    A step flagged both terminated and truncated (Gymnasium allows it) counts as terminated.
    A trajectory still running at the end of the buffer is neither terminated nor truncated: an
    estimator bootstraps it like a truncation. Each step keeps its source cell in the ``env`` and
    ``time`` columns, which :func:`to_rollout_buffer` uses to go back exactly.

    >>> r = torch.tensor([[1.0], [2.0], [3.0]])
    >>> term = torch.tensor([[False], [True], [False]])
    >>> batch = from_rollout_buffer(r, term, torch.zeros(3, 1, dtype=torch.bool))
    >>> batch.lengths.tolist(), batch.terminated.tolist(), batch.truncated.tolist()
    ([2, 1], [True, False], [False, False])
    """
    rewards = as_tensor(rewards, "reward")
    shape = tuple(rewards.shape[:2])
    if rewards.ndim < 2:
        raise ValidationError("reward", f"must be [time, envs], got shape {list(rewards.shape)}")
    flags = {}
    for name, flag in ((TERMINATED, terminated), (TRUNCATED, truncated)):
        flag = as_tensor(flag, name, rewards.device)
        if tuple(flag.shape) != shape:
            raise ValidationError(name, f"has shape {list(flag.shape)}, rewards have {list(shape)}")
        flags[name] = flag.to(torch.bool)
    num_time, num_envs = shape
    # Gymnasium allows both flags at once (the goal reached on the last allowed step). The state is
    # terminal either way: termination wins, so nothing is bootstrapped from it.
    flags[TRUNCATED] = flags[TRUNCATED] & ~flags[TERMINATED]
    done = flags[TERMINATED] | flags[TRUNCATED]
    # Work env-major: flat index = env * T + time, so each env's steps are contiguous.
    done_flat = done.T.reshape(-1)
    time = torch.arange(num_time, device=rewards.device).repeat(num_envs)
    env = torch.arange(num_envs, device=rewards.device).repeat_interleave(num_time)
    keep = torch.ones(num_envs * num_time, dtype=torch.bool, device=rewards.device)
    if autoreset == "next_step":
        previous = torch.roll(done_flat, 1)
        first_row = (
            torch.zeros(num_envs, dtype=torch.bool, device=rewards.device)
            if previous_done is None
            else as_tensor(previous_done, "previous_done", rewards.device).to(torch.bool)
        )
        previous[time == 0] = first_row
        keep = ~previous
    elif autoreset != "same_step":
        raise ValidationError("autoreset", f"must be 'same_step' or 'next_step', got {autoreset!r}")
    kept = torch.nonzero(keep).squeeze(1)
    kept_env, kept_done = env[kept], done_flat[kept]
    starts = torch.ones_like(kept, dtype=torch.bool)
    starts[1:] = (kept_env[1:] != kept_env[:-1]) | kept_done[:-1]
    offsets = torch.cat([torch.nonzero(starts).squeeze(1), kept.new_tensor([kept.shape[0]])])
    last = offsets[1:] - 1
    steps: dict[str, Tensor] = {
        "reward": rewards.transpose(0, 1).reshape(-1, *rewards.shape[2:])[kept]
    }
    for name, column in (columns or {}).items():
        column = as_tensor(column, name, rewards.device)
        if tuple(column.shape[:2]) != shape:
            raise ValidationError(
                name, f"has shape {list(column.shape)}, rewards have {list(shape)}"
            )
        steps[name] = column.transpose(0, 1).reshape(-1, *column.shape[2:])[kept]
    steps[ENV], steps[TIME] = kept_env, time[kept]
    episodes = {
        TERMINATED: flags[TERMINATED].T.reshape(-1)[kept][last],
        TRUNCATED: flags[TRUNCATED].T.reshape(-1)[kept][last],
    }
    return Trajectories(offsets, steps, episodes)


def to_rollout_buffer(
    batch: Trajectories, values: Tensor, num_time: int, num_envs: int, fill: float = 0.0
) -> Tensor:
    """``[time, envs]`` tensor from a per-step tensor, using the ``env``/``time`` step columns.

    Cells no step came from (reset steps under ``next_step`` autoreset) get ``fill``.
    """
    env, time = batch.step(ENV), batch.step(TIME)
    out = values.new_full((num_envs * num_time, *values.shape[1:]), fill)
    out[env * num_time + time] = values
    return out.view(num_envs, num_time, *values.shape[1:]).transpose(0, 1).contiguous()


def transitions(
    batch: Trajectories, obs: str = "obs", action: str = "action", final_obs: str = "final_obs"
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per-step ``(obs, act, next_obs, terminated, truncated)`` — the argument order of the
    ``imitation`` library's reward functions — from a batch with ``obs``/``action`` step columns.

    ``next_obs`` is the next step's observation inside a trajectory and the per-trajectory
    ``final_obs`` after its last step (zeros after a terminal step when there is no ``final_obs``);
    ``terminated``/``truncated`` are true only at a last step.
    """
    observations = batch.step(obs)
    last = batch.segments.last
    if final_obs in batch.episodes:
        following = next_in_segment(observations, batch.segments, batch.episodes[final_obs])
    elif bool(batch.terminated.all()):
        # Nothing follows a terminal state: zeros, never the next trajectory's first observation.
        following = next_in_segment(observations, batch.segments, 0.0)
    else:
        first = int(torch.nonzero(~batch.terminated)[0, 0])
        raise ValidationError(
            final_obs, "needed after trajectories that did not terminate", trajectory=first
        )
    terminated = torch.zeros(batch.num_steps, dtype=torch.bool, device=batch.device)
    truncated = torch.zeros_like(terminated)
    terminated[last] = batch.terminated
    truncated[last] = batch.truncated
    return observations, batch.step(action), following, terminated, truncated
