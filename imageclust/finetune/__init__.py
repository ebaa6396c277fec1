"""Fine-tuning methods by name, and the finetune stage that runs one after the cluster stage.

A method is ``finetune(run: FinetuneRun) -> FinetuneResult`` (``base.py``). It reads its own block
of params (``finetune.<method>``); labels reach it for diagnostics that say so only. Methods in
``trains_encoder`` train the pretrain stage's encoder on the prepared images as well.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..data import load_prepared
from ..errors import DataError
from ..io import atomic_dir, digest_files, fingerprint, save_torch
from ..metrics import nmi
from ..runtime import resolve_device
from ..tables import Assignments, read_assignments, read_features, write_assignments
from .base import CHECKPOINT_FILE, Curves, FinetuneResult, FinetuneRun
from .deepcluster import assign_deepcluster, finetune_deepcluster
from .scan import assign_scan, finetune_scan
from .spectral import assign_spectral, finetune_spectral
from .temi import assign_temi, finetune_temi

log = logging.getLogger(__name__)


def keep_cluster_stage(run: FinetuneRun) -> FinetuneResult:
    """``finetune.method: none``: the cluster stage's assignments and confidences are final."""
    return FinetuneResult(clusters=run.initial_clusters.copy(), confidence=run.initial_confidence.copy())


METHODS = {
    "scan": finetune_scan,
    "temi": finetune_temi,
    "deepcluster": finetune_deepcluster,
    "spectral": finetune_spectral,
    "none": keep_cluster_stage,
}
# how each method sorts new samples (``predict``): features -> (clusters, confidences, distances to
# the cluster centre); features come from the trained encoder for the methods that train it.
# ``none`` has no model of its own: the cluster stage's assigns.
ASSIGNERS = {
    "scan": assign_scan,
    "temi": assign_temi,
    "deepcluster": assign_deepcluster,
    "spectral": assign_spectral,
}
ASSIGNMENTS_FILE = "assignments.parquet"
MODEL_FILE = "model.pt"
ENCODER_FILE = "encoder.pt"


def trains_encoder(params) -> bool:
    """Whether the chosen method trains the encoder on images (and so needs the images and encoder)."""
    return params.method in ("deepcluster", "spectral") or (params.method == "scan" and params.scan.train_backbone)


def run_finetune(features_dir, cluster_dir, out_dir, live_dir, gparams, data_params, params,
                 prepared_dir=None, encoder_path=None, checkpoint_dir=None) -> dict:
    features = read_features(features_dir)
    initial = read_assignments(Path(cluster_dir) / ASSIGNMENTS_FILE)
    if not np.array_equal(initial.ids, features.ids):
        raise DataError(f"{cluster_dir}: assignments do not match the features in {features_dir}; rerun cluster")
    train = np.isin(features.splits, data_params.train_splits)
    if not train.any():
        raise DataError(f"{features_dir}: no samples in data.train_splits={data_params.train_splits}")
    # K as the cluster stage set it (chosen there when cluster.k is auto)
    num_clusters = initial.num_clusters or int(initial.clusters.max()) + 1
    if num_clusters < 2:
        raise DataError(f"{cluster_dir}: the cluster stage found {num_clusters} cluster; fine-tuning needs 2 or more")
    inputs = [Path(features_dir), Path(cluster_dir) / ASSIGNMENTS_FILE]
    row_images = None
    if trains_encoder(params):
        if prepared_dir is None or encoder_path is None:
            raise DataError(f"finetune.method={params.method} trains the encoder: it needs the prepared images "
                            "and the pretrain stage's encoder")
        prepared = load_prepared(prepared_dir)
        position = {sample_id: row for row, sample_id in enumerate(prepared.ids)}
        missing = next((i for i in features.ids if i not in position), None)
        if missing is not None:
            raise DataError(f"{features_dir}: sample {missing!r} is not in {prepared_dir}; rerun extract")
        row_images = np.array([position[i] for i in features.ids], dtype=np.int64)
        inputs += [Path(prepared_dir) / "samples.parquet", Path(encoder_path)]
    package = Path(__file__).resolve().parents[1]
    code = digest_files([package / d for d in ("finetune", "losses", "models", "augment.py", "clustering")],
                        pattern="*.py")
    run_id = fingerprint(gparams, data_params.train_splits, params.method, params.batch_size, params.block,
                         code, digest_files(inputs))
    if checkpoint_dir is not None:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    curves = Curves(live_dir)
    run = FinetuneRun(
        vectors=features.vectors, labels=features.labels, train=train, initial_clusters=initial.clusters,
        initial_confidence=initial.confidence, num_clusters=num_clusters, params=params, seed=gparams.seed,
        device=resolve_device(gparams.device), prepared_dir=prepared_dir and Path(prepared_dir),
        encoder_path=encoder_path and Path(encoder_path), row_images=row_images,
        checkpoint_dir=checkpoint_dir and Path(checkpoint_dir), run_id=run_id, curves=curves)
    started = time.perf_counter()
    result = METHODS[params.method](run)
    curves.close()
    seconds = time.perf_counter() - started
    with atomic_dir(out_dir) as tmp:
        write_assignments(tmp / ASSIGNMENTS_FILE, Assignments(
            ids=features.ids, splits=features.splits, labels=features.labels, clusters=result.clusters,
            confidence=result.confidence, num_clusters=num_clusters))
        save_torch(tmp / MODEL_FILE, {"method": params.method, "num_clusters": num_clusters,
                                      "trains_encoder": result.encoder is not None, **result.model})
        if result.encoder is not None:
            from .images import save_trained_encoder

            save_trained_encoder(tmp / ENCODER_FILE, result.encoder, encoder_path)
    if checkpoint_dir is not None:  # done: the resume state goes (DVC would cache it with every experiment)
        (Path(checkpoint_dir) / CHECKPOINT_FILE).unlink(missing_ok=True)
    agreement = nmi(initial.clusters, result.clusters)
    log.info("%s: %.1fs, NMI with the cluster stage's assignments %.3f", params.method, seconds, agreement)
    return {"method": params.method, "k": num_clusters, "seconds": round(seconds, 3),
            "nmi_with_cluster_stage": agreement, **result.stats}
