"""Gao et al.'s reward over-optimisation curves: fits, peaks and the plot.

Gao, Schulman and Hilton (2023, "Scaling Laws for Reward Model Overoptimization") measure the gold
reward a policy reaches against its distance from the initial policy, ``d = sqrt(KL(pi || pi_init))``
(the reward counted from the initial policy's, so ``R(0) = 0``), and find

    best-of-n:  R_bon(d) = d (alpha - beta d)
    RL:         R_RL(d)  = d (alpha - beta log d)

Both are linear in ``(alpha, beta)`` (features ``[d, -d^2]`` and ``[d, -d log d]``), so the
least-squares fit is the closed-form solution of a two-column linear system. The gold curve rises
then falls; the proxy reward usually keeps rising: the gap is the over-optimisation, and the gold
peak ``d*`` is where training (or n) should stop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from densereward.core.errors import ValidationError

Form = Literal["best_of_n", "rl"]
FORMS: tuple[Form, ...] = ("best_of_n", "rl")


def _distances(d: ArrayLike, name: str = "d") -> np.ndarray:
    values = np.asarray(d, dtype=np.float64)
    if values.ndim != 1:
        raise ValidationError(name, f"must be one-dimensional, got shape {list(values.shape)}")
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValidationError(name, "distances must be finite and non-negative")
    return values


def overoptimization_features(d: ArrayLike, form: Form) -> np.ndarray:
    """The design matrix ``[d, -d^2]`` (best-of-n) or ``[d, -d log d]`` (RL; ``0 log 0 = 0``),
    ``[len(d), 2]``, so that ``R(d) = features @ [alpha, beta]``.

    >>> overoptimization_features([0.0, 1.0, 2.0], "best_of_n").tolist()
    [[0.0, -0.0], [1.0, -1.0], [2.0, -4.0]]
    """
    x = _distances(d)
    if form == "best_of_n":
        second = x * x
    elif form == "rl":
        second = x * np.log(np.where(x > 0, x, 1.0))
    else:
        raise ValidationError("form", f"expected 'best_of_n' or 'rl', got {form!r}")
    return np.stack([x, -second], axis=1)


def overoptimization_curve(d: ArrayLike, form: Form, alpha: float, beta: float) -> np.ndarray:
    """``R_bon(d) = d (alpha - beta d)`` or ``R_RL(d) = d (alpha - beta log d)``.

    >>> overoptimization_curve([1.0, 2.0], "best_of_n", 3.0, 1.0).tolist()
    [2.0, 2.0]
    """
    return overoptimization_features(d, form) @ np.array([alpha, beta])


def peak(form: Form, alpha: float, beta: float) -> tuple[float, float]:
    """``(d*, R(d*))``, where the curve is largest over ``d >= 0``.

    Best-of-n: ``R' = alpha - 2 beta d``, so ``d* = alpha / (2 beta)`` and ``R* = alpha^2 / (4 beta)``
    for ``beta > 0`` (``d* = 0`` if ``alpha <= 0``). RL: ``R' = alpha - beta (log d + 1)``, so
    ``d* = exp(alpha / beta - 1)`` and ``R* = d* (alpha - beta log d*) = beta d*`` for ``beta > 0``.
    With ``beta <= 0`` there is no over-optimisation: the curve grows without bound (``inf``)
    unless ``beta = 0`` and ``alpha <= 0`` (peak at 0).

    >>> peak("best_of_n", 2.0, 0.5), peak("rl", 1.0, 1.0)
    ((2.0, 2.0), (1.0, 1.0))
    """
    if form not in FORMS:
        raise ValidationError("form", f"expected 'best_of_n' or 'rl', got {form!r}")
    if beta <= 0:
        return (0.0, 0.0) if beta == 0 and alpha <= 0 else (math.inf, math.inf)
    if form == "best_of_n":
        at = max(alpha / (2 * beta), 0.0)
        return at, at * (alpha - beta * at)
    at = math.exp(alpha / beta - 1.0)
    return at, beta * at


@dataclass(frozen=True)
class OveroptimizationFit:
    """A fitted curve: its form, ``alpha``, ``beta`` and the least-squares residual."""

    form: Form
    alpha: float
    beta: float
    residual: float = 0.0
    """root-mean-square error of the fit on its points"""

    def __call__(self, d: ArrayLike) -> np.ndarray:
        return overoptimization_curve(d, self.form, self.alpha, self.beta)

    @property
    def peak(self) -> tuple[float, float]:
        """``(d*, R(d*))``; see :func:`peak`."""
        return peak(self.form, self.alpha, self.beta)


def fit_overoptimization(d: ArrayLike, reward: ArrayLike, form: Form) -> OveroptimizationFit:
    """Least-squares ``(alpha, beta)`` of ``R_bon`` or ``R_RL`` through the points ``(d, reward)``.

    ``reward`` is counted from the initial policy's (the forms pass through ``R(0) = 0``):
    subtract the reward at ``d = 0`` first. Solved in closed form (the two-column linear least
    squares problem, by SVD for stability); exact on noise-free points.

    >>> d = np.linspace(0.5, 6.0, 12)
    >>> fit = fit_overoptimization(d, d * (1.0 - 0.25 * np.log(d)), "rl")
    >>> round(fit.alpha, 9), round(fit.beta, 9)
    (1.0, 0.25)
    """
    features = overoptimization_features(d, form)
    target = np.asarray(reward, dtype=np.float64)
    if target.shape != (features.shape[0],):
        raise ValidationError(
            "reward", f"needs one value per distance ({features.shape[0]}), got {target.shape}"
        )
    if not np.isfinite(target).all():
        raise ValidationError("reward", "rewards must be finite")
    if np.linalg.matrix_rank(features) < 2:
        raise ValidationError(
            "d", "needs at least two distinct positive distances (and not all d = 1 for rl)"
        )
    (alpha, beta), *_ = np.linalg.lstsq(features, target, rcond=None)
    error = features @ np.array([alpha, beta]) - target
    return OveroptimizationFit(
        form, float(alpha), float(beta), float(np.sqrt(np.mean(error * error)))
    )


def fit_gold_and_proxy(
    d: ArrayLike, gold: ArrayLike, proxy: ArrayLike
) -> dict[str, dict[Form, OveroptimizationFit]]:
    """Both forms fitted to both curves: ``{"gold": {"best_of_n": ..., "rl": ...}, "proxy": ...}``."""
    return {
        series: {form: fit_overoptimization(d, values, form) for form in FORMS}
        for series, values in (("gold", gold), ("proxy", proxy))
    }


def plot_overoptimization(
    d: ArrayLike,
    gold: ArrayLike,
    proxy: ArrayLike,
    path: str | Path,
    title: str = "",
) -> Mapping[str, Mapping[Form, OveroptimizationFit]]:
    """Gold and proxy reward against ``d = sqrt(KL)``, each with both fitted forms (dashed:
    best-of-n, dotted: RL) and the gold peaks marked; written to ``path`` (PNG, atomically).
    Returns the fits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from densereward.io.atomic import atomic_path

    x = _distances(d)
    fits = fit_gold_and_proxy(x, gold, proxy)
    grid = np.linspace(0.0, float(x.max()) * 1.05 if x.size else 1.0, 200)
    figure, axes = plt.subplots(figsize=(6.0, 4.0))
    for series, values, colour in (("gold", gold, "tab:orange"), ("proxy", proxy, "tab:blue")):
        axes.scatter(x, np.asarray(values, dtype=np.float64), s=14, color=colour, label=series)
        for form, style in zip(FORMS, ("--", ":"), strict=True):
            fit = fits[series][form]
            label = f"{series} {form}: a={fit.alpha:.3g}, b={fit.beta:.3g}"
            axes.plot(grid, fit(grid), style, color=colour, linewidth=1.2, label=label)
            at, _ = fit.peak
            if series == "gold" and math.isfinite(at) and at <= grid[-1]:
                axes.axvline(at, linestyle=style, color="grey", linewidth=0.8)
    axes.set_xlabel("d = sqrt(KL(pi || pi_init))")
    axes.set_ylabel("reward gain over the initial policy")
    if title:
        axes.set_title(title)
    axes.legend(fontsize=7)
    figure.tight_layout()
    with atomic_path(path, keep_suffix=True) as temporary:
        figure.savefig(temporary, dpi=120)
    plt.close(figure)
    return fits
