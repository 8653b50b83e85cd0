"""8×8 digit images for the flow world: scikit-learn's digits (1,797 images shipped inside the
package, nothing downloaded), a classifier trained here for the gold reward, a hackable linear
probe for the proxy.

**Data.** Prompt ``c`` asks for the digit ``c`` (``prompts`` ≤ 10 classes). Pixels (integers
0..16) become ``x = v / 8 - 1 ∈ [-1, 1]``, flattened to 64 numbers, dequantised by uniform noise
of one grey level's width. A fixed split keeps 20 % of the images out of everything the generator
and the classifier see, for the classifier's held-out accuracy.

**Gold**: ``R(x, c) = p_φ(c | clip(x)) · q(x)``: prompt alignment, the probability a small MLP
classifier (trained here on every digit, with pixel noise so it answers on generator outputs too)
gives the prompt's digit, times a quality factor ``q(x) = exp(-||x - clip(x, -1, 1)||² / (2 s²))``
(``s = QUALITY_WIDTH``) that is 1 for anything in the image range and falls for pixels outside
it, which no image has. In [0, 1].

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

QUALITY_WIDTH = 0.5
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


def quality(x: Tensor) -> Tensor:
    """``exp(-||x - clip(x, -1, 1)||² / (2 s²))`` per row."""
    outside = (x - x.clamp(-1.0, 1.0)).pow(2).sum(1)
    return torch.exp(-outside / (2 * QUALITY_WIDTH**2))


@dataclass(frozen=True)
class ImageRewards:
    """Gold and proxy reward on digit images: the classifier and the probe's ``weights
    [prompts, 65]`` (``a_c, b_c``)."""

    classifier: Classifier
    weights: Tensor

    @staticmethod
    def fit(data: Digits, generator: torch.Generator) -> ImageRewards:
        classifier = train_classifier(generator)
        every = torch.randint(10, (PROBE_SAMPLES,), generator=generator)
        x = Digits(10).sample(every, generator)
        features = torch.cat([torch.ones(PROBE_SAMPLES, 1), x], 1).double()
        weights = []
        for c in range(data.prompts):
            prompts = torch.full((PROBE_SAMPLES,), c, dtype=torch.long)
            gold = gold_image_reward(classifier, x, prompts).double().unsqueeze(1)
            weights.append(torch.linalg.lstsq(features, gold).solution.squeeze(1).float())
        return ImageRewards(classifier, torch.stack(weights))

    def gold(self, x: Tensor, prompts: Tensor) -> Tensor:
        return gold_image_reward(self.classifier, x, prompts)

    def proxy(self, x: Tensor, prompts: Tensor) -> Tensor:
        w = self.weights[prompts]
        return w[:, 0] + (w[:, 1:] * x).sum(1)

    def of(self, kind: str, x: Tensor, prompts: Tensor) -> Tensor:
        return self.gold(x, prompts) if kind == "gold" else self.proxy(x, prompts)


@torch.no_grad()
def gold_image_reward(classifier: Classifier, x: Tensor, prompts: Tensor) -> Tensor:
    """``p_φ(c | clip(x)) · q(x)`` per row: ``[n, 64], [n] -> [n]``."""
    probabilities = torch.softmax(classifier(x.clamp(-1.0, 1.0)), 1)
    return probabilities.gather(1, prompts.unsqueeze(1)).squeeze(1) * quality(x)


__all__ = [
    "Classifier",
    "Digits",
    "ImageRewards",
    "digit_split",
    "gold_image_reward",
    "quality",
    "train_classifier",
]
