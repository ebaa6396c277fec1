"""What every figure shares: headless matplotlib figures written atomically, colours by category.

Figures are built with ``matplotlib.figure.Figure`` rather than pyplot, so no GUI backend or global
figure state is involved: ``savefig(format="png")`` renders through Agg, which works headless.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from ..io import atomic_path
from ..metrics import NOISE, hungarian_match
from ..tables import UNLABELED

DPI = 120
MAX_LEGEND = 20  # above this many categories a legend hides the plot, so it is left out


def save_figure(fig: Figure, path: str | Path) -> None:
    """``fig`` as a PNG, written under a temporary name and renamed into place."""
    with atomic_path(path) as tmp:
        # the temporary name ends in .tmp, so the format cannot be inferred from it
        fig.savefig(tmp, format="png", dpi=DPI)


def category_colors(n: int) -> np.ndarray:
    if n <= 10:
        return colormaps["tab10"](np.arange(n))
    if n <= 20:
        return colormaps["tab20"](np.arange(n))
    return colormaps["turbo"](np.linspace(0.0, 1.0, n))


def cluster_colour_indices(clusters: np.ndarray, labels: np.ndarray, n_classes: int) -> dict[int, int]:
    """Each cluster's colour, as an index into ``category_colors``: where labels exist, the colour of
    its matched class (so a map coloured by cluster and one coloured by class compare by eye), and
    colours after the classes' for the clusters no class matched; without labels, its own number."""
    ids = sorted(int(c) for c in np.unique(clusters) if c != NOISE)
    known, found = labelled_rows(labels, clusters)
    match = hungarian_match(known, found) if len(known) else {}
    if not match:
        return {c: c for c in ids}
    unmatched = [c for c in ids if c not in match]
    return {**match, **{c: max(n_classes, max(match.values()) + 1) + i for i, c in enumerate(unmatched)}}


def labelled_rows(labels: np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The labels and clusters of the rows that have a label."""
    keep = np.asarray(labels) != UNLABELED
    return np.asarray(labels)[keep].astype(np.int64), np.asarray(clusters)[keep].astype(np.int64)


def plot_note(text: str, path: str | Path) -> None:
    """A small picture that only says ``text``: for a declared plot that has nothing to draw."""
    fig = Figure(figsize=(6.0, 1.6), layout="constrained")
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=10)
    ax.set_axis_off()
    save_figure(fig, path)
