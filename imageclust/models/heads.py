"""Heads that sit on top of a backbone's features."""

from __future__ import annotations

from torch import nn


def projection_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Module:
    """SimCLR's two-layer MLP projection g(h) (Chen et al. 2020, section 2.1)."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim, bias=False),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )


def cluster_head(in_dim: int, hidden_dim: int, num_clusters: int) -> nn.Module:
    """Maps features to cluster logits: linear when ``hidden_dim`` is 0, else a one-hidden-layer MLP."""
    if hidden_dim == 0:
        return nn.Linear(in_dim, num_clusters)
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, num_clusters),
    )
