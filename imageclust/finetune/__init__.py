"""Fine-tuning methods by name, and the finetune stage that runs one after the cluster stage.

A method is ``finetune(vectors, labels, train_mask, num_clusters, params, seed, device, log_metric)
-> (probabilities, head, stats)``. Labels are passed only for diagnostics that say so.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io import atomic_dir, save_torch
from ..metrics import nmi
from ..runtime import resolve_device
from ..tables import Assignments, read_assignments, read_features, write_assignments
from .scan import finetune_scan

log = logging.getLogger(__name__)

METHODS = {
    "scan": finetune_scan,
}
ASSIGNMENTS_FILE = "assignments.parquet"
HEAD_FILE = "head.pt"


class _LiveLogger:
    """Logs metrics to DVCLive one epoch per step; ``step_done`` closes the step."""

    def __init__(self, live_dir):
        from dvclive import Live

        self.live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False)

    def __call__(self, name: str, value: float, step_done: bool = False) -> None:
        self.live.log_metric(name, float(value))
        if step_done:
            self.live.next_step()

    def close(self) -> None:
        self.live.end()


def run_finetune(features_dir, cluster_dir, out_dir, live_dir, gparams, data_params, num_clusters, params) -> dict:
    features = read_features(features_dir)
    initial = read_assignments(Path(cluster_dir) / ASSIGNMENTS_FILE)
    if not np.array_equal(initial.ids, features.ids):
        raise DataError(f"{cluster_dir}: assignments do not match the features in {features_dir}; rerun cluster")
    train = np.isin(features.splits, data_params.train_splits)
    if not train.any():
        raise DataError(f"{features_dir}: no samples in data.train_splits={data_params.train_splits}")
    # K as the cluster stage set it (chosen there when cluster.k is auto)
    num_clusters = num_clusters or initial.num_clusters or int(initial.clusters.max()) + 1
    if num_clusters < 2:
        raise DataError(f"{cluster_dir}: the cluster stage found {num_clusters} cluster; fine-tuning needs 2 or more")
    device = resolve_device(gparams.device)
    logger = _LiveLogger(live_dir)
    started = time.perf_counter()
    probs, head, stats = METHODS[params.method](
        features.vectors, features.labels, train, num_clusters, params, gparams.seed, device, logger)
    logger.close()
    seconds = time.perf_counter() - started
    clusters = probs.argmax(1)
    with atomic_dir(out_dir) as tmp:
        write_assignments(tmp / ASSIGNMENTS_FILE, Assignments(
            ids=features.ids, splits=features.splits, labels=features.labels, clusters=clusters,
            confidence=probs.max(1), num_clusters=num_clusters))
        save_torch(tmp / HEAD_FILE, {"method": params.method, "num_clusters": num_clusters,
                                     "state_dict": head.cpu().state_dict()})
    agreement = nmi(initial.clusters, clusters)
    log.info("%s: %.1fs, NMI with the cluster stage's assignments %.3f", params.method, seconds, agreement)
    return {"method": params.method, "k": num_clusters,
            "nmi_with_cluster_stage": agreement, **stats}
