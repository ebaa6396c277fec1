"""Heads that sit on top of a backbone's features."""

from __future__ import annotations

from torch import nn


def projection_head(in_dim: int, dims: list[int]) -> nn.Module:
    """The MLP projection g(h) of SimCLR (Chen et al. 2020, section 2.1) and MoCo v2: a linear layer,
    batch norm and ReLU per hidden width in ``dims[:-1]``, then a linear layer to ``dims[-1]``
    (SimCLR v2's deeper heads are e.g. 2048-512-128)."""
    layers: list[nn.Module] = []
    for width in dims[:-1]:
        layers += [nn.Linear(in_dim, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
        in_dim = width
    layers.append(nn.Linear(in_dim, dims[-1]))
    return nn.Sequential(*layers)


class MultiHead(nn.Module):
    """Several heads on the same input (SCAN's and TEMI's heads, of which the lowest-loss one is
    kept); the forward pass gives one output per head."""

    def __init__(self, heads):
        super().__init__()
        self.heads = nn.ModuleList(heads)

    def forward(self, x):
        return [head(x) for head in self.heads]


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
