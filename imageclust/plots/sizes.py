"""Cluster sizes of every source side by side, against the uniform size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..metrics import NOISE
from .common import save_figure


def plot_cluster_sizes(sources: dict[str, np.ndarray], path: str | Path, k: int) -> None:
    """Side-by-side bars of each source's cluster sizes, largest first, against the uniform size n/k."""
    sources = {name: np.asarray(c, dtype=np.int64) for name, c in sources.items()}
    noise = {name: int((c == NOISE).sum()) for name, c in sources.items()}
    sizes = {name: np.sort(np.bincount(c[c != NOISE], minlength=k))[::-1] for name, c in sources.items()}
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
