"""The flow world on 8×8 digits: the data is the asked digit, the classifier is as good as
scikit-learn's own on the same split, the gold reward is its formula, the proxy is hackable exactly
as a linear probe is, the SDE's log-probabilities are exact in 64 dimensions, and the recipe runs."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from torch.distributions import Normal
from typer.testing import CliRunner

from densereward.cli import app
from densereward.worlds.flow.images import (
    COMPONENTS,
    QUALITY_SCALE,
    Digits,
    ImageRewards,
    digit_split,
)
from densereward.worlds.flow.model import VelocityField, sample_sde, sde_mean_std, time_grid
from densereward.worlds.flow.world import FlowWorld


@pytest.fixture(scope="module")
def rewards() -> ImageRewards:
    return ImageRewards.fit(Digits(4), torch.Generator().manual_seed(0))


def test_samples_are_training_images_of_the_asked_digit_within_a_grey_level() -> None:
    prompts = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    samples = Digits(4).sample(prompts, torch.Generator().manual_seed(3))
    images, labels = digit_split()
    for x, c in zip(samples, prompts, strict=True):
        nearest = (images[labels == c] - x).abs().amax(1).min()
        assert nearest <= 1 / 16 + 1e-6
        # and no image of another digit is that close
        assert (images[labels != c] - x).abs().amax(1).min() > 1 / 16


def test_split_partitions_the_digits_the_same_way_every_time() -> None:
    from sklearn.datasets import load_digits

    train, train_labels = digit_split()
    held, held_labels = digit_split(held_out=True)
    assert (len(train), len(held)) == (1437, 360)
    every = torch.from_numpy(load_digits().data).float() / 8 - 1
    together = torch.cat([train, held])
    # the two parts are the dataset's images, each exactly once
    assert torch.equal(together.sum(0), every.sum(0))
    assert torch.equal(
        torch.cat([train_labels, held_labels]).bincount(),
        torch.from_numpy(load_digits().target).bincount(),
    )
    again, _ = digit_split(held_out=True)
    assert torch.equal(held, again)


def test_classifier_is_as_accurate_as_scikit_learns_on_the_same_split(
    rewards: ImageRewards,
) -> None:
    from sklearn.linear_model import LogisticRegression

    x, y = digit_split()
    held_x, held_y = digit_split(held_out=True)
    reference = (
        LogisticRegression(max_iter=2000)
        .fit(x.numpy(), y.numpy())
        .score(held_x.numpy(), held_y.numpy())
    )
    with torch.no_grad():
        ours = float((rewards.classifier(held_x).argmax(1) == held_y).float().mean())
    assert ours >= reference - 0.03, (ours, reference)


def test_gold_is_class_probability_of_the_clipped_image_times_quality(
    rewards: ImageRewards,
) -> None:
    from sklearn.decomposition import PCA

    images, _ = digit_split()
    x = torch.cat(
        [images[:8], 0.6 * torch.randn(8, 64, generator=torch.Generator().manual_seed(4))]
    )
    prompts = torch.arange(4).repeat(4)
    with torch.no_grad():
        p = torch.softmax(rewards.classifier(x.clamp(-1, 1)), 1)[torch.arange(16), prompts]
    # the reconstruction error recomputed by scikit-learn's own PCA
    pca = PCA(COMPONENTS, svd_solver="full").fit(images.numpy())
    rebuilt = torch.from_numpy(pca.inverse_transform(pca.transform(x.numpy()))).float()
    error = (x - rebuilt).pow(2).sum(1)
    reference = torch.quantile(
        (images - torch.from_numpy(pca.inverse_transform(pca.transform(images.numpy()))))
        .pow(2)
        .sum(1),
        0.95,
    )
    quality_factor = torch.exp(-(error - reference).clamp(min=0) / QUALITY_SCALE)
    # bold: above the 75th percentile of the prompt digit's ink, a sigmoid of width std / 4
    ink_of = ((images + 1) / 2).mean(1)
    _, labels = digit_split()
    tau = torch.stack([torch.quantile(ink_of[labels == c], 0.75) for c in range(4)])[prompts]
    width = torch.stack([ink_of[labels == c].std() / 4 for c in range(4)])[prompts]
    boldness = torch.sigmoid((((x.clamp(-1, 1) + 1) / 2).mean(1) - tau) / width)
    expected = p * quality_factor * boldness
    torch.testing.assert_close(rewards.gold(x, prompts), expected, rtol=1e-3, atol=1e-4)
    quality = rewards.manifold.quality(x)
    # training digits look like digits; noise does not, whatever the classifier says
    assert float(quality[:8].mean()) > 0.8 and float(quality[8:].max()) < 0.01
    gold = rewards.gold(x, prompts)
    assert bool(((gold >= 0) & (gold <= 1)).all())
    bold_share = [
        float(
            (rewards.gold(images[labels == c], torch.full(((labels == c).sum(),), c)) > 0.5)
            .float()
            .mean()
        )
        for c in range(4)
    ]
    assert all(0.15 < share < 0.35 for share in bold_share), bold_share


def test_proxy_grows_along_its_probe_while_gold_falls_to_zero(rewards: ImageRewards) -> None:
    prompts = torch.arange(4).repeat(8)
    x = Digits(4).sample(prompts, torch.Generator().manual_seed(5))
    b = rewards.weights[prompts, 1:]
    for s in (0.0, 1.0, 4.0, 16.0):
        moved = x + s * b / b.norm(dim=1, keepdim=True)
        expected = rewards.proxy(x, prompts) + s * b.norm(dim=1)
        torch.testing.assert_close(rewards.proxy(moved, prompts), expected, rtol=1e-4, atol=1e-4)
    far = x + 16.0 * b / b.norm(dim=1, keepdim=True)
    assert float(rewards.gold(far, prompts).max()) < 1e-3
    # on the data, the probe ranks the right digit over the wrong one, as gold does
    assert float(rewards.proxy(x, prompts).mean()) > float(
        rewards.proxy(x, (prompts + 1) % 4).mean()
    )


def test_sde_log_probs_are_exact_gaussian_densities_in_64_dimensions() -> None:
    torch.manual_seed(0)
    model = VelocityField(4, hidden=32, dims=64)
    prompts = torch.arange(4).repeat(2)
    steps = 5
    trajectory = sample_sde(model, prompts, steps, 0.7, torch.Generator().manual_seed(1))
    grid = time_grid(steps)
    with torch.no_grad():
        for k in range(steps):
            x = trajectory.states[:, k]
            mean, std = sde_mean_std(x, model(x, grid[k], prompts), grid, k, 0.7)
            expected = Normal(mean, std).log_prob(trajectory.next_states[:, k]).sum(1)
            torch.testing.assert_close(trajectory.log_probs[:, k], expected, rtol=1e-5, atol=1e-3)
            t = 1 - k / steps
            sigma = 0.7 * math.sqrt(t / (1 - (t if k else 1 - 1 / steps)))
            assert float(std) == pytest.approx(sigma * math.sqrt(1 / steps), rel=1e-5)


def test_digits_recipe_runs_end_to_end_with_an_image_grid(tmp_path: Path) -> None:
    recipe = tmp_path / "digits.yaml"
    recipe.write_text(
        "world: {kind: flow, dataset: digits, prompts: 2, steps: 4, hidden: 32, "
        "pretrain_steps: 50, evaluation_samples: 4}\n"
        "trainer: {kind: flow_grpo, updates: 2, group_size: 4, prompts_per_update: 2}\n"
        "methods:\n  flow_grpo: {estimator: {kind: grpo}}\n"
        "  dense_grpo:\n    signals: {gain: {kind: ode_reward_gain}}\n"
        "    estimator: {kind: timestep_grpo, process: gain}\n"
    )
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(recipe), "--local", "--out", str(out)])
    assert result.exit_code == 0, result.output
    evaluations = pq.read_table(out / "evaluation.parquet").to_pylist()
    assert all(0.0 <= e["eval_gold"] <= 1.0 for e in evaluations)
    assert all("image_7_63" in e and "image_8_0" not in e for e in evaluations)
    report = (out / "report.md").read_text()
    assert "8×8 digit rectified flow" in report and "Held-out ODE images" in report
    assert "data:image/png;base64," in report
    with pytest.raises(ValueError, match="10 classes"):
        FlowWorld(dataset="digits", prompts=11)
