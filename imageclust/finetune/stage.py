"""The finetune stage: run ``finetune.method`` on the cluster stage's result and write every
sample's cluster, the method's model (what ``predict`` assigns new images with) and, for the
methods that train it, the encoder."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..data.prepared import SAMPLES_FILE, load_prepared
from ..errors import DataError
from ..imports import stage_modules
from ..io import atomic_dir, digest_files, fingerprint, save_torch
from ..labelfree import cluster_sizes
from ..metrics import nmi
from ..models.encoder import save_trained_encoder
from ..runtime import resolve_device
from ..tables import (
    REFEREES_FOLDER,
    Assignments,
    read_assignments,
    read_features,
    read_referees,
    read_spaces,
    write_assignments,
)
from .base import CHECKPOINT_FILE, Curves, FinetuneRun
from .guard import RefereeSpace, floor
from .registry import METHODS

log = logging.getLogger(__name__)

ASSIGNMENTS_FILE = "assignments.parquet"
MODEL_FILE = "model.pt"
ENCODER_FILE = "encoder.pt"
CLUSTER_ASSIGNMENTS = "assignments.parquet"  # the cluster stage's, in its folder


def run_finetune(
    features_dir,
    cluster_dir,
    out_dir,
    live_dir,
    gparams,
    train_splits: list[str],
    params,
    prepared_dir=None,
    encoder_path=None,
    checkpoint_dir=None,
    spaces_dir=None,
    encoder_pretrained: bool = True,
) -> dict:
    """Fine-tune on the ``train_splits`` rows; every row gets a cluster. Returns the stage's metrics.
    ``spaces_dir``: the extract_spaces stage's folder (the further representation spaces);
    ``encoder_pretrained``: pretrain.method is not none (the guards judge in the starting features)."""
    features = read_features(features_dir)
    uses_spaces = spaces_dir is not None and METHODS[params.method].uses_spaces
    more_spaces = read_spaces(spaces_dir, features.ids) if uses_spaces else {}
    initial = read_assignments(Path(cluster_dir) / CLUSTER_ASSIGNMENTS)
    if not np.array_equal(initial.ids, features.ids):
        raise DataError(f"{cluster_dir}: assignments do not match the features in {features_dir}; rerun cluster")
    train = np.isin(features.splits, train_splits)
    if not train.any():
        raise DataError(f"{features_dir}: no samples in data.train_splits={train_splits}")
    # K as the cluster stage set it (chosen there when cluster.k is auto)
    num_clusters = initial.num_clusters or int(initial.clusters.max()) + 1
    if num_clusters < 2:
        raise DataError(f"{cluster_dir}: the cluster stage found {num_clusters} cluster; fine-tuning needs 2 or more")
    referees = (
        referee_spaces(spaces_dir, features.ids, train, gparams.seed) if METHODS[params.method].uses_referees else {}
    )
    inputs = [Path(features_dir), Path(cluster_dir) / CLUSTER_ASSIGNMENTS]
    inputs += [Path(spaces_dir) / name for name in more_spaces]
    inputs += [Path(spaces_dir) / REFEREES_FOLDER / name for name in referees]
    row_images = None
    if params.trains_encoder:
        if prepared_dir is None or encoder_path is None:
            raise DataError(
                f"finetune.method={params.method} trains the encoder: it needs the prepared images "
                "and the pretrain stage's encoder"
            )
        prepared = load_prepared(prepared_dir)
        position = {sample_id: row for row, sample_id in enumerate(prepared.ids)}
        missing = next((i for i in features.ids if i not in position), None)
        if missing is not None:
            raise DataError(f"{features_dir}: sample {missing!r} is not in {prepared_dir}; rerun extract")
        row_images = np.array([position[i] for i in features.ids], dtype=np.int64)
        inputs += [Path(prepared_dir) / SAMPLES_FILE, Path(encoder_path)]
    code = digest_files(stage_modules("finetune"))  # the files dvc.yaml lists as the stage's code
    run_id = fingerprint(
        gparams, train_splits, params.method, params.batch_size, params.block, code, digest_files(inputs)
    )
    if checkpoint_dir is not None:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    curves = Curves(live_dir)
    run = FinetuneRun(
        vectors=features.vectors,
        labels=features.labels,
        train=train,
        initial_clusters=initial.clusters,
        initial_confidence=initial.confidence,
        num_clusters=num_clusters,
        params=params,
        seed=gparams.seed,
        device=resolve_device(gparams.device),
        prepared_dir=prepared_dir and Path(prepared_dir),
        encoder_path=encoder_path and Path(encoder_path),
        row_images=row_images,
        checkpoint_dir=checkpoint_dir and Path(checkpoint_dir),
        run_id=run_id,
        curves=curves,
        more_spaces={name: table.vectors for name, table in more_spaces.items()},
        referee_spaces=referees,
        encoder_pretrained=encoder_pretrained,
    )
    started = time.perf_counter()
    result = METHODS[params.method].run(run)
    if params.floor and METHODS[params.method].floored:
        result = floor(run, result)
    curves.close()
    seconds = time.perf_counter() - started
    with atomic_dir(out_dir) as tmp:
        write_assignments(
            tmp / ASSIGNMENTS_FILE, Assignments.of(features, result.clusters, result.confidence, num_clusters)
        )
        save_torch(
            tmp / MODEL_FILE,
            {
                "method": params.method,
                "num_clusters": num_clusters,
                "trains_encoder": result.encoder is not None,
                **result.model,
            },
        )
        if result.encoder is not None:
            save_trained_encoder(tmp / ENCODER_FILE, result.encoder, encoder_path)
    if checkpoint_dir is not None:  # done: the resume state goes (DVC would cache it with every experiment)
        (Path(checkpoint_dir) / CHECKPOINT_FILE).unlink(missing_ok=True)
    agreement = nmi(initial.clusters, result.clusters)
    log.info("%s: %.1fs, NMI with the cluster stage's assignments %.3f", params.method, seconds, agreement)
    return {
        "method": params.method,
        "k": num_clusters,
        "seconds": round(seconds, 3),
        "nmi_with_cluster_stage": agreement,
        "spaces": 1 + len(more_spaces),  # representation spaces the method was given
        "referee_spaces": len(referees),
        "cluster_sizes": cluster_sizes(result.clusters[train], num_clusters),
        **result.stats,
    }


def referee_spaces(spaces_dir, ids: np.ndarray, train: np.ndarray, seed: int) -> dict[str, RefereeSpace]:
    """``extract.referees`` as the run's rows they hold (every one a training row) and their features,
    judged with the run's ``seed``."""
    if spaces_dir is None:
        return {}
    position = {sample_id: row for row, sample_id in enumerate(ids)}
    spaces = {}
    for name, table in read_referees(spaces_dir, ids).items():
        rows = np.array([position[sample_id] for sample_id in table.ids], dtype=np.int64)
        if not train[rows].all():
            raise DataError(
                f"{spaces_dir}/{REFEREES_FOLDER}/{name}: it holds samples outside data.train_splits; "
                "rerun extract_spaces"
            )
        spaces[name] = RefereeSpace(rows, table.vectors, seed)
    return spaces
