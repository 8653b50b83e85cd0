"""densereward's estimators inside verl 0.9.1, checked against verl's own functions and against
densereward's pipeline on the same data."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("verl")

from omegaconf import OmegaConf
from verl import DataProto
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.ray_trainer import compute_advantage

from densereward.adapters import verl as adapter
from densereward.adapters.padded import (
    ZERO_STEP_REWARD,
    padded_gae,
    padded_grpo,
    padded_reinforce_pp,
    padded_rloo,
)
from densereward.core.trajectories import Trajectories
from densereward.estimators import estimate_step_grpo


def test_importing_verl_registers_every_estimator_through_the_entry_point() -> None:
    """A fresh interpreter: verl swallows plugin errors, so registration is asserted."""
    code = (
        "import verl\n"
        "from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY as R\n"
        "from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER\n"
        "import densereward.adapters.verl as a\n"
        "assert all(R[n] is f for n, f in a.ESTIMATORS.items()), sorted(R)\n"
        "assert REWARD_MANAGER['densereward'] is a.DenseRewardManager\n"
        "print(sorted(a.ESTIMATORS))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    names = eval(out.stdout.strip().splitlines()[-1])
    assert set(names) == {
        "densereward",
        "densereward_grpo",
        "densereward_rloo",
        "densereward_reinforce_pp",
        "densereward_step_grpo",
    }
    # never a name verl dispatches itself or already has
    assert not set(names) & {"gae", "grpo", *(e.value for e in core_algos.AdvantageEstimator)}


def test_registering_twice_is_accepted_and_a_collision_is_not() -> None:
    adapter.register_estimators()  # the same functions again (a second import): accepted
    with pytest.raises(ValueError):
        core_algos.register_adv_est("densereward_grpo")(lambda **kw: kw)


@st.composite
def padded_batches(
    draw: st.DrawFn, holes: bool = True
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Rows of G responses per prompt, right-padded, with optional holes (tool tokens)."""
    prompts = draw(st.integers(1, 4))
    group = draw(st.integers(2, 4))
    width = draw(st.integers(1, 12))
    rows = prompts * group
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (rows,), generator=generator)
    mask = (torch.arange(width)[None] < lengths[:, None]).long()
    if holes and draw(st.booleans()):
        hole = torch.rand(rows, width, generator=generator) < 0.3
        hole[:, 0] = False  # each row keeps a token
        mask = mask * (~hole).long()
    rewards = torch.randn(rows, width, generator=generator) * mask
    index = np.array([f"uid-{i // group}" for i in range(rows)], dtype=object)
    return rewards, mask, index


@settings(max_examples=60, deadline=None)
@given(padded_batches(holes=False))
def test_grpo_and_rloo_agree_with_verl(
    batch: tuple[torch.Tensor, torch.Tensor, np.ndarray],
) -> None:
    rewards, mask, index = batch
    ours, _ = padded_grpo(rewards, mask, index)
    loop, _ = core_algos.compute_grpo_outcome_advantage(rewards, mask, index)
    vectorized, _ = core_algos.compute_grpo_vectorized_outcome_advantage(rewards, mask, index)
    torch.testing.assert_close(ours, loop, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours, vectorized, rtol=1e-5, atol=1e-5)
    dr, _ = padded_grpo(rewards, mask, index, scale=False)
    verl_dr, _ = core_algos.compute_grpo_outcome_advantage(
        rewards, mask, index, norm_adv_by_std_in_grpo=False
    )
    torch.testing.assert_close(dr, verl_dr, rtol=1e-5, atol=1e-5)
    rloo, _ = padded_rloo(rewards, mask, index)
    verl_rloo, _ = core_algos.compute_rloo_vectorized_outcome_advantage(rewards, mask, index)
    torch.testing.assert_close(rloo, verl_rloo, rtol=1e-5, atol=1e-5)


def test_the_convention_differences_with_verl() -> None:
    """Each difference found, pinned: groups of one, returns, and rewards outside the mask."""
    rewards = torch.tensor([[2.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    mask = torch.tensor([[1, 0], [1, 0], [1, 0]])
    index = np.array(["a", "b", "b"], dtype=object)
    ours, returns = padded_grpo(rewards, mask, index)
    verl_loop, verl_returns = core_algos.compute_grpo_outcome_advantage(rewards, mask, index)
    # a group of one: verl gives (R - 0) / (1 + eps), densereward 0 (no baseline, no signal)
    assert ours[0, 0] == 0.0 and verl_loop[0, 0] == pytest.approx(2.0 / (1 + 1e-6))
    # returns: verl hands back the advantages, densereward the row's total reward
    assert torch.equal(verl_returns, verl_loop) and returns[:, 0].tolist() == [2.0, 1.0, 3.0]
    # RLOO, a group of one: verl's loop leaves the raw score, its vectorised version 0, ours 0
    loop_rloo, _ = core_algos.compute_rloo_outcome_advantage(rewards.clone(), mask, index)
    ours_rloo, _ = padded_rloo(rewards, mask, index)
    assert loop_rloo[0, 0] == 2.0 and ours_rloo[0, 0] == 0.0
    # a reward outside the mask: verl's .sum(-1) counts it (verl#6362), densereward does not
    leaked = rewards.clone()
    leaked[1, 1] = 5.0
    assert padded_grpo(leaked, mask, index)[0].equal(ours)
    assert not core_algos.compute_grpo_vectorized_outcome_advantage(leaked, mask, index)[0].equal(
        core_algos.compute_grpo_vectorized_outcome_advantage(rewards, mask, index)[0]
    )


@settings(max_examples=60, deadline=None)
@given(padded_batches(), st.sampled_from([1.0, 0.9]), st.sampled_from(["int", "float", "bool"]))
def test_reinforce_pp_and_gae_agree_with_verl_including_holes(
    batch: tuple[torch.Tensor, torch.Tensor, np.ndarray], gamma: float, kind: str
) -> None:
    rewards, mask, _ = batch
    typed = {"int": mask, "float": mask.float(), "bool": mask.bool()}[kind]
    config = OmegaConf.create({"gamma": gamma})
    ours, ours_returns = padded_reinforce_pp(rewards, typed, gamma)
    theirs, their_returns = core_algos.compute_reinforce_plus_plus_outcome_advantage(
        rewards, mask, config
    )
    torch.testing.assert_close(ours_returns, their_returns, rtol=1e-5, atol=1e-5)
    # whitening: verl multiplies by rsqrt(var + 1e-8), densereward divides by std + 1e-8; the two
    # agree to 1e-4 unless the variance is near 1e-8 (then neither is meaningful)
    if float(ours_returns[mask.bool()].var()) > 1e-3:
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    values = torch.randn(rewards.shape, generator=torch.Generator().manual_seed(1)) * mask
    ours, ours_returns = padded_gae(rewards, values, typed, gamma, 0.95)
    theirs, their_returns = core_algos.compute_gae_advantage_return(
        rewards, values, mask, gamma, 0.95
    )
    keep = mask.bool()
    # returns = raw advantage + value: the unwhitened GAE, compared exactly
    torch.testing.assert_close(ours_returns[keep], their_returns[keep], rtol=1e-5, atol=1e-5)
    if float((ours_returns - values)[keep].var()) > 1e-3:
        torch.testing.assert_close(ours[keep], theirs[keep], rtol=1e-4, atol=1e-4)


def _slow_step_batch(
    rewards: torch.Tensor, mask: torch.Tensor, index: np.ndarray
) -> tuple[Trajectories, list[list[int]]]:
    """Independent reading of the step convention: a Python loop over tokens."""
    steps, owners = [], []
    for row in range(rewards.shape[0]):
        kept = [t for t in range(rewards.shape[1]) if mask[row, t]]
        row_steps, row_owner, pending = [], [], []
        for position, t in enumerate(kept):
            pending.append(t)
            turn_ends = position == len(kept) - 1 or kept[position + 1] != t + 1
            if rewards[row, t] != 0 or turn_ends:
                row_steps.append(float(rewards[row, t]))
                row_owner.append(pending)
                pending = []
        steps.append(row_steps)
        owners.append(row_owner)
    groups = np.unique(index, return_inverse=True)[1].tolist()
    return Trajectories.from_episodes({"reward": steps}, {"group": groups}), owners


@settings(max_examples=40, deadline=None)
@given(padded_batches(), st.sampled_from([0.0, 1.0]), st.sampled_from(["group", "batch"]))
def test_step_grpo_in_verl_equals_densereward_pipeline(
    batch: tuple[torch.Tensor, torch.Tensor, np.ndarray], gamma: float, scope: str
) -> None:
    rewards, mask, index = batch
    rewards = rewards * (torch.rand(rewards.shape) < 0.4)  # sparse: step ends are the nonzeros
    data = DataProto.from_dict(
        tensors={"token_level_rewards": rewards, "response_mask": mask},
        non_tensors={"uid": index},
    )
    config = OmegaConf.create(
        {"gamma": 1.0, "use_kl_in_reward": False, "densereward": {"gamma": gamma, "scope": scope}}
    )
    out = compute_advantage(data, "densereward_step_grpo", config=config)
    reference, owners = _slow_step_batch(rewards, mask, index)
    estimate = estimate_step_grpo(reference, "reward", gamma=gamma, scope=scope)
    expected = torch.zeros_like(rewards)
    flat = estimate.advantages.tolist()
    k = 0
    for row, row_owner in enumerate(owners):
        for tokens in row_owner:
            for t in tokens:
                expected[row, t] = flat[k]
            k += 1
    torch.testing.assert_close(out.batch["advantages"], expected, rtol=1e-5, atol=1e-5)


def test_generic_estimator_and_refusals() -> None:
    rewards = torch.tensor([[0.0, 1.0, 0.0, 2.0], [0.5, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    index = np.array(["a", "a"], dtype=object)
    config = OmegaConf.create({"densereward": {"estimator": {"kind": "rloo"}}})
    advantages, _ = adapter.any_advantage(rewards, mask, index, config)
    # RLOO on totals 3.0 and 0.5: +2.5 and -2.5 on every masked token
    assert advantages.tolist() == [[2.5] * 4, [-2.5, -2.5, -2.5, 0.0]]
    from densereward.core.errors import ConfigError

    with pytest.raises(ConfigError, match="use_kl_in_reward"):
        adapter.step_grpo_advantage(
            rewards, mask, index, OmegaConf.create({"use_kl_in_reward": True})
        )
    with pytest.raises(ConfigError, match="estimator"):
        adapter.any_advantage(rewards, mask, index, OmegaConf.create({}))
    with pytest.raises(ConfigError, match=r"unknown|kind"):
        adapter.any_advantage(
            rewards, mask, index, OmegaConf.create({"densereward": {"estimator": {"kind": "nope"}}})
        )


def test_verls_own_cpu_tests_pass_with_the_plugin_loaded() -> None:
    """verl's estimator-registry, multi-turn REINFORCE++ and loss-aggregation CPU tests (shipped
    in verl's wheel as the top-level ``tests`` package), run in a fresh interpreter where
    ``import verl`` loads densereward's plugin."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("verl")
    assert spec is not None and spec.origin is not None
    ppo = Path(spec.origin).parents[1] / "tests" / "trainer" / "ppo"
    files = [
        ppo / name
        for name in (
            "test_core_algos_on_cpu.py",
            "test_reinforce_pp_multiturn_on_cpu.py",
            "test_loss_aggregation_on_cpu.py",
        )
    ]
    if not all(f.is_file() for f in files):
        pytest.skip("this verl wheel does not ship its tests")
    check = "import verl, densereward.adapters.verl as a\nfrom verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY as R\nassert set(a.ESTIMATORS) <= set(R)"
    subprocess.run([sys.executable, "-c", check], check=True, capture_output=True)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore",
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        cwd=ppo,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:]
    assert " passed" in out.stdout and "failed" not in out.stdout


def test_zero_step_rewards_keep_their_boundary() -> None:
    tensor = adapter.step_reward_tensor(
        torch.tensor([0.0, 1.0]), torch.tensor([1, 3]), torch.tensor([0, 0]), (1, 4)
    )
    assert tensor[0, 1] == ZERO_STEP_REWARD and tensor[0, 3] == 1.0
    batch, _, step_of_token = adapter.padded_estimate.__globals__["step_trajectories"](
        tensor, torch.ones(1, 4, dtype=torch.long)
    )
    assert batch.lengths.tolist() == [2] and step_of_token.tolist() == [[0, 0, 1, 1]]


def _grade(prompts: list[str], responses: list[str], labels: list[object]) -> list[float]:
    """Outcome: the answer after '#' equals the label."""
    return [
        float(r.rpartition("#")[2] == str(label))
        for r, label in zip(responses, labels, strict=True)
    ]


def test_reward_manager_writes_step_rewards_the_step_estimator_reads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """verl's reward loop on two responses: ``run_single`` then ``assemble_rm_scores`` give
    ``rm_scores``; ``densereward_step_grpo`` on them equals densereward's pipeline on the
    scorer's own batch (outcome folded into the last step)."""
    import asyncio

    from densereward.adapters.text import TextScorer
    from densereward.models.language import build_causal_lm
    from densereward.models.prm import ProcessRewardModel
    from densereward.pipeline import Recipe
    from densereward.worlds.reasoning.tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    torch.manual_seed(0)
    prm = ProcessRewardModel(build_causal_lm(tokenizer, layers=1, width=32, heads=2))
    torch.nn.init.normal_(prm.head.weight, std=0.5)
    prm.save_pretrained(tmp_path / "prm")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "signals: {prm: {kind: prm, model: prm}}\n"
        "estimator: {kind: step_grpo, process: prm, gamma: 0.0}\n"
    )
    config = OmegaConf.create(
        {
            "reward": {
                "densereward": {
                    "recipe": str(recipe),
                    "tokenizer": str(tmp_path / "tokenizer"),
                    "models": {"prm": str(tmp_path / "prm")},
                    "outcome": f"{__name__}:_grade",
                    "step_tag": "ки",
                }
            }
        }
    )
    manager = adapter.DenseRewardManager(config, tokenizer, None)
    prompts, responses, labels = ["1+2*2", "1+2*2"], ["2*2=4ки1+4=5ки#5", "2*2=4ки#4"], [5, 5]
    width = 20
    prompt_ids = [
        tokenizer(tokenizer.bos_token + p, add_special_tokens=False)["input_ids"] for p in prompts
    ]
    response_ids = [
        tokenizer(r, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        for r in responses
    ]
    p_width = max(map(len, prompt_ids))
    rows = len(prompts)
    prompt_tensor = torch.full((rows, p_width), tokenizer.pad_token_id)
    response_tensor = torch.full((rows, width), tokenizer.pad_token_id)
    attention = torch.zeros(rows, p_width + width, dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids, strict=True)):
        prompt_tensor[i, p_width - len(p) :] = torch.tensor(p)
        response_tensor[i, : len(r)] = torch.tensor(r)
        attention[i, p_width - len(p) : p_width + len(r)] = 1
    data = DataProto.from_dict(
        tensors={
            "prompts": prompt_tensor,
            "responses": response_tensor,
            "attention_mask": attention,
        },
        non_tensors={
            "reward_model": np.array([{"ground_truth": str(x)} for x in labels], dtype=object),
            "uid": np.array(["q", "q"], dtype=object),
        },
    )
    outputs = [asyncio.run(manager.run_single(data[i : i + 1])) for i in range(rows)]
    rm_scores = type(manager).assemble_rm_scores(data, [o["reward_score"] for o in outputs])
    response_mask = attention[:, p_width:]

    scorer = TextScorer(
        Recipe.from_yaml(recipe),
        tokenizer,
        step_tag="ки",
        models={"prm": ProcessRewardModel.from_pretrained(tmp_path / "prm")},
        outcome=_grade,
    )
    scored = scorer(prompts, responses, labels)
    assert [float(o["reward_score"]) for o in outputs] == pytest.approx(
        scored.totals.tolist(), abs=1e-6
    )
    # every step's reward sits at its end token; the outcome joins the last step's
    expected = torch.zeros(rows, width)
    spans = scored.batch.token_spans
    steps = scored.per_response()
    k = 0
    for i in range(rows):
        for j, value in enumerate(steps[i]):
            expected[i, int(spans[k, 1]) - 1] = value + (
                float(scored.outcome[i]) if j == len(steps[i]) - 1 else 0.0
            )
            k += 1
    torch.testing.assert_close(rm_scores, expected, rtol=1e-6, atol=1e-6)

    advantages, _ = adapter.step_grpo_advantage(
        rm_scores,
        response_mask,
        data.non_tensor_batch["uid"],
        OmegaConf.create({"densereward": {"gamma": 0.0}}),
    )
    folded = Trajectories.from_episodes(
        {
            "reward": [
                [*s[:-1], s[-1] + float(o)] for s, o in zip(steps, scored.outcome, strict=True)
            ]
        },
        {"group": [0, 0]},
    )
    step_advantages = estimate_step_grpo(folded, gamma=0.0).advantages
    last_tokens = (spans[:, 1] - 1).tolist()
    rows_of_step = folded.segments.ids.tolist()
    for k, (row, column) in enumerate(zip(rows_of_step, last_tokens, strict=True)):
        assert float(advantages[row, column]) == pytest.approx(float(step_advantages[k]), abs=1e-5)


def readme_block(heading: str) -> str:
    """The first fenced code block after ``heading`` in README.md."""
    from pathlib import Path

    text = (Path(__file__).parents[2] / "README.md").read_text()
    after = text[text.index(heading) :]
    start = after.index("```")
    body = after[after.index("\n", start) + 1 :]
    return body[: body.index("```")]


def test_the_readme_verl_lines_compose_with_verls_config_and_run(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The README's overrides, composed with verl's own ``ppo_trainer.yaml`` by Hydra: the reward
    manager verl would build from that config scores a batch, and the advantage step verl runs
    (``compute_advantage`` with ``config.algorithm``) dispatches to densereward."""
    import os

    import verl
    from hydra import compose, initialize_config_dir

    from densereward.models.language import build_causal_lm
    from densereward.models.prm import ProcessRewardModel
    from densereward.worlds.reasoning.tokenizer import build_tokenizer

    overrides = [
        word
        for word in readme_block("### verl").replace("\\\n", " ").split()
        if word.lstrip("+").startswith(("algorithm.", "reward."))
    ]
    assert len(overrides) == 5
    monkeypatch.chdir(tmp_path)
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained("policy_tokenizer")
    tokenizer = type(tokenizer).from_pretrained("policy_tokenizer")
    prm = ProcessRewardModel(build_causal_lm(tokenizer, layers=1, width=32, heads=2))
    torch.nn.init.normal_(prm.head.weight, std=0.5)
    prm.save_pretrained("prm_dir")
    (tmp_path / "prm.yaml").write_text(
        "signals: {prm: {kind: prm, model: prm}}\nestimator: {kind: step_grpo, process: prm}\n"
    )
    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        config = compose(config_name="ppo_trainer", overrides=overrides)
    manager_cls = core_algos_manager(config.reward.reward_manager.name)
    manager = manager_cls(config, tokenizer, None)
    assert manager.scorer.recipe.signals == {"prm": {"kind": "prm", "model": "prm"}}
    scored = manager.scorer(["1+2"], ["1+2=3\n#3"])
    assert scored.lengths.tolist() == [2]
    rewards = torch.zeros(2, 6)
    rewards[0, 2], rewards[0, 5], rewards[1, 5] = 0.5, 1.0, 0.25
    data = DataProto.from_dict(
        tensors={
            "token_level_rewards": rewards,
            "response_mask": torch.ones(2, 6, dtype=torch.long),
        },
        non_tensors={"uid": np.array(["a", "a"], dtype=object)},
    )
    out = compute_advantage(data, config.algorithm.adv_estimator, config=config.algorithm)
    expected, _ = adapter.step_grpo_advantage(
        rewards,
        torch.ones(2, 6),
        data.non_tensor_batch["uid"],
        OmegaConf.create({"densereward": {"gamma": 0.0}}),
    )
    torch.testing.assert_close(out.batch["advantages"], expected)
    # gamma 0 from the README's line: each token carries its own step's normalised reward only
    assert out.batch["advantages"][0, 0] != out.batch["advantages"][0, 3]


def core_algos_manager(name: str) -> type:
    from verl.experimental.reward_loop.reward_manager.registry import get_reward_manager_cls

    return get_reward_manager_cls(name)
