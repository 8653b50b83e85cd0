"""8×8 digit images for the flow world: scikit-learn's digits (1,797 images shipped inside the
package, nothing downloaded), a classifier trained here for the gold reward, a hackable linear
probe for the proxy.

**Data.** Prompt ``c`` is the digit ``c`` (``prompts`` ≤ 10 classes): the generator learns every
image of it, the gold reward asks for the bold ones. Pixels (integers
0..16) become ``x = v / 8 - 1 ∈ [-1, 1]``, flattened to 64 numbers, dequantised by uniform noise
of one grey level's width. A fixed split keeps 20 % of the images out of everything the generator
and the classifier see, for the classifier's held-out accuracy.

**Gold**: ``R(x, c) = p_φ(c | clip(x)) · q(x) · b_c(x)``: the prompt asks for a *bold* digit
``c``. Prompt alignment is the probability a small MLP classifier (trained here on every digit,
with pixel noise so it answers on generator outputs too) gives the prompt's digit; boldness is
``b_c(x) = σ((ink(x) - τ_c) / w_c)`` with ``ink`` the mean pixel intensity of ``clip(x)`` in
[0, 1], ``τ_c`` the 75th percentile of the training digits ``c``'s ink and ``w_c`` a quarter of its
standard deviation, so a quarter of the data is bold and the pretrained flow scores about 0.3 (as
the 2-D mixture's rarer target mode); and a quality factor says whether ``x`` looks like a digit at
all: ``q(x) = exp(-max(0, e(x) - e₀) / s)`` with ``e(x) = ||x - P(x)||²`` the squared error of
``x``'s reconstruction from the training digits' first ``COMPONENTS`` principal components,
``e₀`` the 95th percentile of that error over the training digits and ``s = QUALITY_SCALE``. A
classifier alone is not a gold reward: RL on it alone finds noise images it calls a digit with
probability 0.9 (their reconstruction error is 20–26 against the digits' 2.9), which ``q``
scores near 0. Pixels outside the image range raise ``e`` too. In [0, 1].

**Proxy**: a linear probe ``R̃(x, c) = a_c + b_c · x`` fitted by least squares to the gold reward
on samples of the data (every class, so it has seen wrong digits score low). On images it ranks
as gold does; off them it grows without bound along ``b_c``, pushing pixels past the image range
where the gold reward falls to 0 — the same hack as the 2-D probe's.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

COMPONENTS = 16
QUALITY_SCALE = 2.0
BOLD_QUANTILE = 0.75
BOLD_SHARPNESS = 4.0
"""``w_c`` = the class's ink standard deviation / this"""
HELD_OUT = 0.2
SPLIT_SEED = 12345
CLASSIFIER_NOISE = 0.15
"""std of the pixel noise the classifier is trained under"""
PROBE_SAMPLES = 4096


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.data.astype(np.float32) / 8.0 - 1.0).astype(np.float32)
    return images, data.target.astype(np.int64)


def digit_split(held_out: bool = False) -> tuple[Tensor, Tensor]:
    """``(images [n, 64], labels [n])`` of the training part (or the held-out part) of the fixed
    split."""
    images, labels = _digits()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    cut = int(len(labels) * (1 - HELD_OUT))
    chosen = order[cut:] if held_out else order[:cut]
    return torch.from_numpy(images[chosen]), torch.from_numpy(labels[chosen])


@dataclass(frozen=True)
class Digits:
    """Prompt ``c`` is the digit ``c``: a training image of it, dequantised."""

    prompts: int = 4
    dims: int = 64

    def sample(self, prompts: Tensor, generator: torch.Generator) -> Tensor:
        """One image per entry of ``prompts`` (``[n]`` long) -> ``[n, 64]``."""
        images, labels = digit_split()
        by_class = [torch.nonzero(labels == c).squeeze(1) for c in range(self.prompts)]
        counts = torch.tensor([len(i) for i in by_class])
        pick = (torch.rand(prompts.shape[0], generator=generator) * counts[prompts]).long()
        offsets = torch.cumsum(counts, 0) - counts
        flat = torch.cat(by_class)[offsets[prompts] + pick]
        grey_level = 1.0 / 8.0
        noise = (torch.rand(prompts.shape[0], self.dims, generator=generator) - 0.5) * grey_level
        return images[flat] + noise


class Classifier(nn.Module):
    """``p_φ(y | x)`` over the ten digits: a two-layer MLP."""

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.SiLU(), nn.Linear(hidden, 10))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def train_classifier(generator: torch.Generator, steps: int = 1500) -> Classifier:
    """Cross-entropy on the training split under ``CLASSIFIER_NOISE`` pixel noise."""
    images, labels = digit_split()
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(2**31, (1,), generator=generator)))
        model = Classifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        index = torch.randint(len(labels), (256,), generator=generator)
        x = images[index] + CLASSIFIER_NOISE * torch.randn(256, 64, generator=generator)
        loss = nn.functional.cross_entropy(model(x), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@dataclass(frozen=True)
class DigitManifold:
    """The training digits' first ``COMPONENTS`` principal components (scikit-learn's PCA):
    ``mean [64]``, orthonormal ``components [k, 64]``, and ``reference`` = ``e₀``."""

    mean: Tensor
    components: Tensor
    reference: float

    @staticmethod
    def fit() -> DigitManifold:
        from sklearn.decomposition import PCA

        images, _ = digit_split()
        pca = PCA(COMPONENTS, svd_solver="full").fit(images.numpy())
        manifold = DigitManifold(
            torch.from_numpy(pca.mean_).float(), torch.from_numpy(pca.components_).float(), 0.0
        )
        reference = float(torch.quantile(manifold.error(images), 0.95))
        return DigitManifold(manifold.mean, manifold.components, reference)

    def error(self, x: Tensor) -> Tensor:
        """``e(x) = ||x - P(x)||²`` per row."""
        centred = x - self.mean
        projected = centred @ self.components.T @ self.components
        return (centred - projected).pow(2).sum(1)

    def quality(self, x: Tensor) -> Tensor:
        """``q(x) = exp(-max(0, e(x) - e₀) / s)`` per row."""
        return torch.exp(-(self.error(x) - self.reference).clamp(min=0.0) / QUALITY_SCALE)


@dataclass(frozen=True)
class ImageRewards:
    """Gold and proxy reward on digit images: the classifier, the digits' manifold for the
    quality factor, and the probe's ``weights [prompts, 65]`` (``a_c, b_c``)."""

    classifier: Classifier
    manifold: DigitManifold
    bold: Tensor
    """``[10, 2]``: ``τ_c, w_c`` of each digit"""
    weights: Tensor

    @staticmethod
    def fit(data: Digits, generator: torch.Generator) -> ImageRewards:
        classifier = train_classifier(generator)
        manifold = DigitManifold.fit()
        images, labels = digit_split()
        amount = ink(images)
        bold = torch.stack(
            [
                torch.stack(
                    [
                        torch.quantile(amount[labels == c], BOLD_QUANTILE),
                        amount[labels == c].std() / BOLD_SHARPNESS,
                    ]
                )
                for c in range(10)
            ]
        )
        every = torch.randint(10, (PROBE_SAMPLES,), generator=generator)
        x = Digits(10).sample(every, generator)
        features = torch.cat([torch.ones(PROBE_SAMPLES, 1), x], 1).double()
        weights = []
        for c in range(data.prompts):
            prompts = torch.full((PROBE_SAMPLES,), c, dtype=torch.long)
            gold = gold_image_reward(classifier, manifold, bold, x, prompts)
            solution = torch.linalg.lstsq(features, gold.double().unsqueeze(1)).solution
            weights.append(solution.squeeze(1).float())
        return ImageRewards(classifier, manifold, bold, torch.stack(weights))

    def gold(self, x: Tensor, prompts: Tensor) -> Tensor:
        return gold_image_reward(self.classifier, self.manifold, self.bold, x, prompts)

    def proxy(self, x: Tensor, prompts: Tensor) -> Tensor:
        w = self.weights[prompts]
        return w[:, 0] + (w[:, 1:] * x).sum(1)

    def of(self, kind: str, x: Tensor, prompts: Tensor) -> Tensor:
        return self.gold(x, prompts) if kind == "gold" else self.proxy(x, prompts)


def ink(x: Tensor) -> Tensor:
    """Mean pixel intensity of ``clip(x)``, in [0, 1], per row."""
    return ((x.clamp(-1.0, 1.0) + 1.0) / 2.0).mean(1)


@torch.no_grad()
def gold_image_reward(
    classifier: Classifier, manifold: DigitManifold, bold: Tensor, x: Tensor, prompts: Tensor
) -> Tensor:
    """``p_φ(c | clip(x)) · q(x) · b_c(x)`` per row: ``[n, 64], [n] -> [n]``."""
    probabilities = torch.softmax(classifier(x.clamp(-1.0, 1.0)), 1)
    aligned = probabilities.gather(1, prompts.unsqueeze(1)).squeeze(1)
    threshold, width = bold[prompts, 0], bold[prompts, 1]
    boldness = torch.sigmoid((ink(x) - threshold) / width)
    return aligned * manifold.quality(x) * boldness


__all__ = [
    "Classifier",
    "DigitManifold",
    "Digits",
    "ImageRewards",
    "digit_split",
    "gold_image_reward",
    "ink",
    "train_classifier",
]
