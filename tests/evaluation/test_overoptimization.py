"""Gao et al.'s over-optimisation forms: exact fits, noisy fits, peaks and the plot."""

from __future__ import annotations

import numpy as np
import pytest

from densereward.core.errors import ValidationError
from densereward.evaluation.overoptimization import (
    FORMS,
    fit_overoptimization,
    overoptimization_curve,
    peak,
    plot_overoptimization,
)

D = np.linspace(0.0, 8.0, 41)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 0.1), (2.5, 0.7), (0.3, 0.02), (1.0, -0.2)])
def test_noise_free_curves_are_recovered_exactly(form, alpha, beta) -> None:
    fit = fit_overoptimization(D, overoptimization_curve(D, form, alpha, beta), form)
    assert fit.alpha == pytest.approx(alpha, rel=1e-10, abs=1e-12)
    assert fit.beta == pytest.approx(beta, rel=1e-10, abs=1e-12)
    assert fit.residual < 1e-10


@pytest.mark.parametrize("form", FORMS)
def test_noisy_curves_are_recovered_within_tolerance(form) -> None:
    rng = np.random.default_rng(0)
    d = np.linspace(0.1, 8.0, 400)
    reward = overoptimization_curve(d, form, 1.2, 0.15) + rng.normal(scale=0.02, size=d.size)
    fit = fit_overoptimization(d, reward, form)
    assert fit.alpha == pytest.approx(1.2, rel=0.02)
    assert fit.beta == pytest.approx(0.15, rel=0.05)
    assert fit.residual == pytest.approx(0.02, rel=0.2)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 0.1), (2.0, 0.9), (0.5, 0.3)])
def test_peak_formulas_match_a_numeric_argmax(form, alpha, beta) -> None:
    at, value = peak(form, alpha, beta)
    expected = alpha / (2 * beta) if form == "best_of_n" else np.exp(alpha / beta - 1)
    assert at == pytest.approx(expected, rel=1e-12)
    grid = np.linspace(0.0, 3 * at, 300_001)
    curve = overoptimization_curve(grid, form, alpha, beta)
    assert grid[np.argmax(curve)] == pytest.approx(at, rel=1e-4)
    assert value == pytest.approx(curve.max(), rel=1e-8)


def test_no_overoptimisation_without_a_positive_beta() -> None:
    assert peak("rl", 1.0, -0.1) == (np.inf, np.inf)
    assert peak("best_of_n", -1.0, 0.0) == (0.0, 0.0)
    assert peak("best_of_n", -1.0, 0.5) == (0.0, 0.0)


def test_bad_points_are_refused() -> None:
    with pytest.raises(ValidationError, match="non-negative"):
        fit_overoptimization([-1.0, 1.0, 2.0], [0.0, 0.0, 0.0], "rl")
    with pytest.raises(ValidationError, match="one value per distance"):
        fit_overoptimization([1.0, 2.0], [0.0], "rl")
    with pytest.raises(ValidationError, match="distinct"):
        fit_overoptimization([1.0, 1.0], [0.5, 0.5], "rl")
    with pytest.raises(ValidationError, match="form"):
        fit_overoptimization([1.0, 2.0], [0.5, 0.5], "ppo")  # type: ignore[arg-type]


def test_plot_writes_a_png_and_returns_both_fits_of_both_curves(tmp_path) -> None:
    gold = overoptimization_curve(D, "rl", 1.0, 0.4)
    proxy = overoptimization_curve(D, "rl", 1.0, 0.05)
    fits = plot_overoptimization(D, gold, proxy, tmp_path / "overoptimization.png", "test")
    assert (tmp_path / "overoptimization.png").read_bytes()[:4] == b"\x89PNG"
    assert set(fits) == {"gold", "proxy"} and set(fits["gold"]) == set(FORMS)
    assert fits["gold"]["rl"].peak[0] < fits["proxy"]["rl"].peak[0]
