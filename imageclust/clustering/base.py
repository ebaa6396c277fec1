"""What every clustering method returns, and how its centroids assign new points."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Clustering:
    centroids: np.ndarray  # (k, d) in the transformed feature space
    stats: dict = field(default_factory=dict)

    def predict(self, x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centroid and its soft-assignment confidence for each row of ``x``."""
        from .kmeans import student_t_assignment

        clusters, confidence = [], []
        for start in range(0, len(x), chunk):
            q = student_t_assignment(x[start : start + chunk], self.centroids)
            clusters.append(q.argmax(1))
            confidence.append(q.max(1))
        return np.concatenate(clusters), np.concatenate(confidence).astype(np.float32)
