"""``report.md`` and the curves: the generic frame around each world's own section."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from densereward.core.components import Axis, Plot, RunResults
from densereward.evaluation.curves import trailing_mean
from densereward.runs.recipe import RunRecipe


def report_markdown(recipe: RunRecipe, results: RunResults) -> str:
    """The recipe's name and description, then the world's section."""
    return "\n".join(
        [f"# {recipe.name}", "", recipe.description.strip(), "", recipe.world.report(results)]
    )


def plot_curves(results: RunResults, axis: Axis, plot: Plot, title: str, path: Path) -> None:
    """Mean over seeds of ``plot.metric`` against ``axis``, one line per method, ± one std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=120)
    for method in results.methods:
        curves = []
        for seed in results.seeds:
            run = results.run(method, seed, plot.metric)
            steps = np.array([r[axis.column] for r in run])
            values = np.array([r[plot.metric] for r in run], dtype=float)
            curves.append(trailing_mean(values, plot.smooth))
        stacked = np.vstack(curves)
        with warnings.catch_warnings():  # early updates may have no finished episode in any seed
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, spread = np.nanmean(stacked, 0), np.nanstd(stacked, 0)
        axes.plot(steps, mean, label=f"{method} ({len(results.seeds)} seeds)")
        low, high = mean - spread, mean + spread
        if plot.bounded:
            low, high = np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)
        axes.fill_between(steps, low, high, alpha=0.2)
    axes.set_xlabel(axis.label)
    axes.set_ylabel(plot.label)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
