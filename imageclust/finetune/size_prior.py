"""The cluster sizes SCAN, TEMI and TURTLE expect.

Their size terms (SCAN's and TURTLE's entropy of the mean prediction, TEMI's division by the
cluster marginal) pull every cluster towards n/K images: right for balanced classes, and why, on a
folder whose classes fall from 387 images to 39, two small classes got no cluster of their own while
the large ones were split. ``finetune.size_prior`` sets the sizes the terms expect instead:
``uniform`` (as published), ``clusters`` (the cluster stage's sizes on the training rows, smoothed
towards uniform: k-means does not equalise sizes the way those terms do), or ``auto``: ``clusters``
when their sizes are unequal, their coefficient of variation over ``UNEQUAL_CV``, a level that
balanced classes' k-means partitions stay under (``benchmarks/size_prior.py``), and none of them empty;
or ``long_tail``: sizes falling geometrically from the largest to ``finetune.imbalance_ratio`` times
smaller, the long-tailed profile of CIFAR-10-LT (Cui et al., "Class-Balanced Loss Based on Effective
Number of Samples", CVPR 2019), for a user who knows roughly how unequal the classes are. The k-means
sizes are flatter than the classes' (it splits large classes and merges small ones), and no label-free
score tells the right steepness apart (``docs/results.md``, "Clusters of unequal size"), so PET-TURTLE's
user-set prior (Salazar Cavazos, IEEE SPL 2026) is offered as a setting, not chosen.
"""

from __future__ import annotations

import numpy as np
import torch

UNEQUAL_CV = 0.35  # balanced draws' k-means stayed at or under 0.26, 10:1 digits' over 0.45
SMOOTHING = 0.1  # share of the uniform prior mixed in, so that no cluster is expected empty


def size_prior(run) -> tuple[torch.Tensor | None, dict]:
    """The prior of ``run`` (``None``: uniform) on the device, and what was chosen, for the stats."""
    choice = run.params.size_prior
    shares, cv = cluster_shares(run.initial_clusters[run.train], run.num_clusters)
    if choice == "long_tail":
        ratio = run.params.imbalance_ratio
        stats = {"size_prior": "long_tail", "imbalance_ratio": ratio, "cluster_stage_size_cv": round(cv, 4)}
        return torch.as_tensor(long_tail_shares(run.num_clusters, ratio), dtype=torch.float32, device=run.device), stats
    # a partition with an empty cluster (a degenerate start, or TURTLE's random one) estimates no sizes
    use = choice == "clusters" or (choice == "auto" and cv > UNEQUAL_CV and bool((shares > 0).all()))
    stats = {"size_prior": "clusters" if use else "uniform", "cluster_stage_size_cv": round(cv, 4)}
    if not use:
        return None, stats
    return smoothed_prior(shares, run.device), stats


def cluster_shares(assignment: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Each of the ``k`` clusters' share of ``assignment`` (-1: none) and the shares' coefficient of variation."""
    counts = np.bincount(assignment[assignment >= 0], minlength=k)[:k].astype(np.float64)
    shares = counts / max(counts.sum(), 1.0)
    return shares, float(shares.std() / shares.mean()) if shares.mean() > 0 else 0.0


def long_tail_shares(k: int, ratio: float) -> np.ndarray:
    """``k`` shares falling geometrically, the first ``ratio`` times the last: ``ratio ** (-i / (k - 1))``,
    summed to 1."""
    shares = float(ratio) ** (-np.arange(k) / max(k - 1, 1))
    return shares / shares.sum()


def smoothed_prior(shares: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """``shares`` mixed with the uniform prior (``SMOOTHING``), as the size terms take it."""
    prior = (1 - SMOOTHING) * shares + SMOOTHING / len(shares)
    return torch.as_tensor(prior, dtype=torch.float32, device=device)
