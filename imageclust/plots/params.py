"""The ``plot`` section of params.yaml."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..config import Int, Section


class PlotParams(Section):
    """``plot``: the figures, contact sheets and report."""

    key = "plot"
    embedding: Literal["tsne", "pca", "umap"] = Field("tsne", description="2-D map method")
    max_points: Int = Field(3000, ge=10, description="points drawn in the map (seeded subsample)")
    thumbnail_grid: Int = Field(
        25, ge=0, description="the map with images: each image is 1/N of the map's width and height; 0: no such map"
    )
    sheet_confident: Int = Field(40, ge=1, description="most confident images on each cluster's sheet")
    sheet_uncertain: Int = Field(10, ge=0, description="least confident images on each cluster's sheet")
    overview_images: Int = Field(12, ge=1, description="images per cluster in `report/overview.png`")
    max_sheets: Int = Field(100, ge=1, description="with more clusters, sheets of the largest this many only")
