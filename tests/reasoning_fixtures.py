"""Small real Hugging Face models on the reasoning world, shared by the reasoning tests."""

from __future__ import annotations

import functools

import torch

from densereward.models.language import build_causal_lm
from densereward.worlds.reasoning.tasks import Difficulty, TaskSpec, sample_problems
from densereward.worlds.reasoning.tokenizer import build_tokenizer

SPEC = TaskSpec(("arithmetic", "lists"), Difficulty(min_ops=1, max_ops=3))


@functools.cache
def tokenizer():
    return build_tokenizer()


@functools.cache
def model(architecture: str = "gpt2"):
    """A randomly initialised 2-layer LM (real weights, real attention; no training needed for
    consistency checks)."""
    return build_causal_lm(tokenizer(), architecture, layers=2, width=32, heads=2, seed=3).eval()


def problems(n: int, seed: int = 0):
    return [s.problem for s in sample_problems(SPEC, n, seed)]


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
