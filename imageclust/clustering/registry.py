"""Every clustering method by name: a new method is one module (its ``Params`` and ``METHOD``)
plus one entry here; the schema, the parameters reference and the stage pick it up from this dict."""

from __future__ import annotations

from . import agglomerative, gmm, hdbscan, kmeans, pic, spectral
from .base import ClusterMethod

METHODS: dict[str, ClusterMethod] = {
    method.name: method
    for method in (
        kmeans.METHOD,
        gmm.METHOD,
        spectral.METHOD,
        agglomerative.METHOD,
        hdbscan.METHOD,
        pic.METHOD,
    )
}
