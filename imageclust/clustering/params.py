"""The ``cluster`` section of params.yaml: the keys every method shares (the method, K, the
preprocessing) and one block per registered method (``cluster.kmeans``, ``cluster.gmm``, ...)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..config import Int, Section, one_of, with_blocks
from .choose_k import AutoKParams
from .preprocess import UmapParams
from .registry import METHODS


class ClusterShared(Section):
    """``cluster``: a classical clustering of the extracted features, fitted on the training splits."""

    key = "cluster"
    method: one_of(lambda: METHODS, "cluster method") = Field(
        "kmeans", description="clustering method (`imageclust/clustering/`; see docs/clustering.md)"
    )
    k: Int | Literal["auto"] = Field(
        10,
        description="number of clusters (finetune takes the cluster stage's K), 2 <= k <= training samples; "
        "`auto`: chosen without labels in `[auto_k.min_k, auto_k.max_k]`",
    )
    auto_k: AutoKParams = Field(default_factory=AutoKParams, description="how K is chosen when `k` is `auto`")
    l2_normalize: bool = Field(True, description="normalise features to unit length first")
    standardize: bool = Field(False, description="per feature: zero mean, unit variance (after L2, before PCA)")
    pca_dim: Int | None = Field(None, ge=1, description="PCA dimension; null keeps all")
    whiten: bool = Field(False, description="divide the PCA components by their standard deviation")
    umap_dim: Int | None = Field(None, ge=1, description="UMAP to this many dimensions after PCA; null: no UMAP")
    umap: UmapParams = Field(default_factory=UmapParams, description="UMAP's knobs, when `umap_dim` is set")

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, value):
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be an integer >= 2 or 'auto'")
        if value < 2:
            raise ValueError("Input should be greater than or equal to 2")
        return value

    @model_validator(mode="after")
    def _bic_needs_a_mixture(self):
        if self.auto_k.criterion == "bic" and METHODS[self.method].k_criterion != "bic":
            raise ValueError(f"cluster.auto_k.criterion=bic needs cluster.method=gmm, not {self.method}")
        return self

    @model_validator(mode="after")
    def _spherical_needs_unit_vectors(self):
        kmeans = getattr(self, "kmeans", None)
        if kmeans is not None and kmeans.spherical and not self.l2_normalize:
            raise ValueError("cluster.kmeans.spherical=true needs cluster.l2_normalize=true")
        return self

    @property
    def block(self):
        """The chosen method's own block."""
        return getattr(self, self.method)


ClusterParams = with_blocks("ClusterParams", ClusterShared, METHODS, "the knobs of")
