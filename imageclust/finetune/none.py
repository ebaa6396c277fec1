"""``finetune.method: none``: the cluster stage's assignments and confidences are final, and its
model assigns new samples."""

from __future__ import annotations

from .base import FinetuneMethod, FinetuneResult, FinetuneRun


def keep_cluster_stage(run: FinetuneRun) -> FinetuneResult:
    return FinetuneResult(clusters=run.initial_clusters.copy(), confidence=run.initial_confidence.copy())


METHOD = FinetuneMethod("none", keep_cluster_stage, floored=False)
