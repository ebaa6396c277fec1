"""Cluster sizes of every source side by side, against the uniform size: a chart, and a small CSV
that `dvc plots diff` draws across experiments."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..io import atomic_path
from ..metrics import NOISE
from .common import save_figure


def sorted_sizes(sources: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """Each source's cluster sizes, largest first, noise left out (at least ``k`` of them, empty ones as 0)."""
    sources = {name: np.asarray(c, dtype=np.int64) for name, c in sources.items()}
    return {name: np.sort(np.bincount(c[c != NOISE], minlength=k))[::-1] for name, c in sources.items()}


def write_cluster_sizes_csv(sources: dict[str, np.ndarray], path: str | Path, k: int) -> None:
    """``rank,<source>,...``: one row per cluster rank, largest first, a column of sizes per source."""
    sizes = sorted_sizes(sources, k)
    n_rows = max(len(s) for s in sizes.values())
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["rank", *sizes])
            for rank in range(n_rows):
                writer.writerow([rank + 1, *(int(s[rank]) if rank < len(s) else 0 for s in sizes.values())])


def plot_cluster_sizes(sources: dict[str, np.ndarray], path: str | Path, k: int) -> None:
    """Side-by-side bars of each source's cluster sizes, largest first, against the uniform size n/k."""
    noise = {name: int((np.asarray(c) == NOISE).sum()) for name, c in sources.items()}
    sizes = sorted_sizes(sources, k)
    n_bars = max([k, *(len(s) for s in sizes.values())])
    width = 0.8 / max(len(sizes), 1)
    fig = Figure(figsize=(max(6.0, 0.35 * n_bars + 2.0), 4.0), layout="constrained")
    ax = fig.add_subplot()
    for i, (name, size) in enumerate(sizes.items()):
        ax.bar(np.arange(len(size)) + (i - (len(sizes) - 1) / 2) * width, size, width, label=name)
        ax.axhline(size.sum() / k, color="grey", linestyle="--", linewidth=1)
    if n_bars <= 40:  # beyond that, matplotlib's automatic ticks stay readable
        ax.set_xticks(range(n_bars), [str(r + 1) for r in range(n_bars)])
    ax.set_xlabel("cluster rank (largest first)")
    ax.set_ylabel("samples")
    noted = ", ".join(f"{name}: {count} noise" for name, count in noise.items() if count)
    ax.set_title(f"Cluster sizes (k={k}; dashed: uniform n/k)" + (f"; {noted}" if noted else ""))
    if sizes:
        ax.legend()
    save_figure(fig, path)
