"""Spectral fine-tuning of the encoder, as the "MoCo + spectral fine-tuning" system does: the
pretrained encoder is trained further on spectral-clustering pseudo-labels of its own embeddings.

Each epoch, on the training rows only:
1. every ``recluster_every`` epochs (and first at epoch 0), embed the images with the current
   encoder (L2-normalised, evaluation mode) and cluster them with the cluster stage's spectral
   clustering (kNN graph, Ng, Jordan & Weiss 2001) into ``num_clusters`` pseudo-clusters; their
   centres are the L2-normalised means of the embeddings, fixed until the next re-clustering
   (the alternation of DeepCluster, Caron et al. 2018);
2. train the encoder on one augmented view of each image with the prototype cross-entropy
   (``losses.prototypes.prototype_loss``, PCL's centroid form, Li et al. 2021), which tightens the
   pseudo-clusters around their centres and separates them;
3. score the new embeddings under the current pseudo-labels without any label (silhouette,
   Davies-Bouldin or Calinski-Harabasz, scikit-learn's, on the same seeded subsample of at most
   ``score_samples`` rows every epoch so that scores are comparable), log it, and keep the encoder
   and pseudo-labels of the best-scoring epoch; stop early after ``patience`` epochs without a better
   score.

With ``guard`` (by default when the encoder was pretrained), each spectral clustering's pseudo-labels are also judged in
the features the run started from (``guard.py``, by nearest neighbours): the epoch kept is the
best-judged clustering's, its best-scoring epoch, and when no clustering beats the cluster stage's
assignment, judged the same way, that assignment is returned (the silhouette of the encoder's own
embeddings rose on Fashion-MNIST while the clusters left the classes: 0.620 against k-means' 0.689).

Choices: the score is measured after the epoch's training, under the pseudo-labels the epoch trained
on; at the end every row is embedded with the kept encoder, training rows keep their pseudo-label and
every other row takes the vote of its nearest training rows (the spectral clustering's ``knn`` rule,
on the kept encoder's embeddings so that both sides come from the same encoder); every confidence is
that vote's share.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from ..augment import PresetName, build_augmenter
from ..clustering import spectral as spectral_clustering
from ..clustering.base import Clustering, cluster_means, distances_to_centres
from ..clustering.graph import knn_vote_clustering
from ..config import Int, Section
from ..losses.prototypes import prototype_loss
from ..metrics import nmi
from ..runtime import check_finite_loss
from .base import FinetuneMethod, FinetuneResult, FinetuneRun, shuffled_batches
from .guard import Referee, cluster_stage_kept
from .images import Images, embed, trainable_encoder

log = logging.getLogger(__name__)
HINT = "Try a lower finetune.spectral.lr"  # when the loss stops being a number


class Params(Section):
    epochs: Int = Field(20, ge=1, description="most epochs (early stopping may end sooner)")
    recluster_every: Int = Field(5, ge=1, description="epochs between two spectral clusterings of the embeddings")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate of the encoder")
    weight_decay: float = Field(1e-4, ge=0, description="L2 penalty on the weights")
    num_neighbors: Int = Field(
        10,
        ge=1,
        description="the kNN affinity graph of the spectral clustering, and the vote that assigns other splits",
    )
    temperature: float = Field(0.1, gt=0, description="of the loss that pulls each embedding to its cluster's centre")
    augment: PresetName = Field("gray", description="of the training images")
    score: Literal["silhouette", "davies_bouldin", "calinski_harabasz"] = Field(
        "silhouette", description="the label-free score logged each epoch; the best epoch's encoder is kept"
    )
    patience: Int | None = Field(3, ge=1, description="stop after this many epochs without a better score")
    score_samples: Int = Field(5000, ge=10, description="seeded subsample the score is computed on")
    guard: bool | None = Field(
        None,
        description=(
            "judge each clustering in the starting features (by nearest neighbours) and never return one "
            "judged worse than the cluster stage's; null: when the encoder was pretrained"
        ),
    )


LOWER_IS_BETTER = {"davies_bouldin"}


def cluster_score(x: np.ndarray, labels: np.ndarray, name: str) -> float:
    """scikit-learn's ``<name>_score`` of ``x`` under ``labels``; NaN where it is undefined (one cluster,
    or as many clusters as points)."""
    from sklearn import metrics

    if not 2 <= len(np.unique(labels)) < len(labels):
        return math.nan
    return float(getattr(metrics, f"{name}_score")(x, labels))


def oriented(name: str, value: float) -> float:
    """The score turned so that higher is better; an undefined score is the worst."""
    if math.isnan(value):
        return -math.inf
    return -value if name in LOWER_IS_BETTER else value


def _finite(value: float) -> float | None:
    """An undefined score as null in the metrics (JSON has no NaN)."""
    return None if math.isnan(value) else value


def centres_of(z: np.ndarray, labels: np.ndarray, k: int) -> torch.Tensor:
    """L2-normalised means of the (L2-normalised) embeddings of each pseudo-cluster."""
    return F.normalize(torch.from_numpy(cluster_means(z, labels, k)), dim=1)


def finetune_spectral(run: FinetuneRun) -> FinetuneResult:
    """Train the encoder on its own spectral pseudo-clusters; keep the best-scoring epoch (module docstring)."""
    p, device, batch_size = run.block, run.device, run.params.batch_size
    torch.manual_seed(run.seed)
    train_rows = np.flatnonzero(run.train)
    n, k = len(train_rows), run.num_clusters
    cluster_params = spectral_clustering.Params(num_neighbors=p.num_neighbors)
    rng = np.random.default_rng(run.seed)
    scored = np.sort(rng.choice(n, p.score_samples, replace=False)) if n > p.score_samples else np.arange(n)

    images = Images(run)
    encoder = trainable_encoder(run)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    augment = build_augmenter(p.augment)
    generator = torch.Generator().manual_seed(run.seed)  # batches
    image_generator = torch.Generator(device=device).manual_seed(run.seed)  # augmentations
    labels = centres = best = None  # pseudo-labels of the training rows (CPU), their centres (device)
    scores: list[float] = []
    referee = Referee.of_run(run) if run.guarded(p.guard) else None
    start_score = referee.score(run.initial_clusters[train_rows]) if referee else None
    judged = -math.inf  # the guard's score of the current pseudo-labels
    since_best, reclusterings, stopped, start = 0, 0, False, 0

    resumed = run.resume()
    if resumed is not None:
        start, labels, scores = resumed["epoch"], resumed["labels"].numpy(), resumed["scores"]
        centres, best, judged = resumed["centres"].to(device), resumed["best"], resumed["judged"]
        since_best, reclusterings, stopped = resumed["since_best"], resumed["reclusterings"], resumed["stopped"]
        encoder.load_state_dict(resumed["encoder"])
        optimizer.load_state_dict(resumed["optimizer"])
        generator.set_state(resumed["generator"])
        image_generator.set_state(resumed["image_generator"])

    def state() -> dict:
        return {
            "epoch": epoch + 1,
            "encoder": encoder.state_dict(),
            "optimizer": optimizer.state_dict(),
            "labels": torch.from_numpy(labels),
            "centres": centres.cpu(),
            "best": best,
            "judged": judged,
            "scores": scores,
            "since_best": since_best,
            "reclusterings": reclusterings,
            "stopped": stopped,
            "generator": generator.get_state(),
            "image_generator": image_generator.get_state(),
        }

    images_trained = 0  # by this run, for images/s: not by the run it resumed
    for epoch in run.epochs(start, start if stopped else p.epochs, "spectral"):  # a stopped run stays stopped
        row = {}
        if epoch % p.recluster_every == 0:
            z = embed(encoder, images, train_rows, batch_size)
            previous = run.initial_clusters[train_rows] if labels is None else labels
            labels = spectral_clustering.fit_spectral(z, k, cluster_params, run.seed).fit_labels
            centres = centres_of(z, labels, k).to(device)
            reclusterings += 1
            row["spectral/nmi_to_previous"] = nmi(previous, labels)  # stability, no labels needed
            if referee is not None:
                judged = row["spectral/guard_score"] = referee.score(labels)

        encoder.train()
        targets = torch.from_numpy(labels).to(device)
        batches = shuffled_batches(n, batch_size, generator)
        total = 0.0
        for step, batch in enumerate(batches):
            views = augment(images.batch(train_rows[batch.numpy()]), image_generator)
            loss = prototype_loss(encoder(views), centres, targets[batch.to(device)], p.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += check_finite_loss(loss.item(), "finetune spectral", epoch, step, HINT)
            images_trained += len(batch)

        score = cluster_score(embed(encoder, images, train_rows[scored], batch_size), labels[scored], p.score)
        scores.append(score)
        if best is None or (judged, oriented(p.score, score)) > (best["judged"], oriented(p.score, best["score"])):
            since_best = 0
            best = {
                "epoch": epoch,
                "score": score,
                "judged": judged,
                "labels": torch.from_numpy(labels.copy()),
                "encoder": {name: t.detach().clone() for name, t in encoder.state_dict().items()},
            }
        else:
            since_best += 1
        stopped = p.patience is not None and since_best >= p.patience and epoch + 1 < p.epochs
        row.update({"spectral/loss": total / max(len(batches), 1), f"spectral/{p.score}": score})
        run.end_epoch(epoch, p.epochs, row, state, last=stopped)
        if stopped:
            log.info("spectral: no better %s for %d epochs; stopping after epoch %d", p.score, p.patience, epoch + 1)
            break

    guard = {}
    if referee is not None:
        guard = {
            "guard_start_score": round(start_score, 4),
            "guard_best_score": round(best["judged"], 4),
            "guard_kept_cluster_stage": bool(best["judged"] <= start_score),
        }
        if guard["guard_kept_cluster_stage"]:
            log.warning(
                "spectral: no clustering beat the cluster stage's in the starting features (neighbour "
                "kappa %.4f against %.4f); the cluster stage's assignment is kept",
                best["judged"],
                start_score,
            )
            return cluster_stage_kept(run, {"best_epoch": best["epoch"], "train_samples": int(n), **guard})
    encoder.load_state_dict(best["encoder"])
    encoder.eval()
    best_labels = best["labels"].numpy()
    z_all = embed(encoder, images, np.arange(len(run.vectors)), batch_size)
    z_train = z_all[train_rows]
    clustering = knn_vote_clustering(z_train, best_labels, k, p.num_neighbors, {})
    clusters, confidence = clustering.predict(z_all)
    clusters = clusters.astype(np.int64)
    clusters[train_rows] = best_labels  # training rows keep their pseudo-label; the vote gives confidence
    return FinetuneResult(
        clusters=clusters,
        confidence=confidence.astype(np.float32),
        model={
            "centres": centres_of(z_train, best_labels, k),
            "train_labels": best["labels"],
            "best_epoch": best["epoch"],
            "rule": clustering.to_tensors(),
        },
        encoder=encoder,
        stats={
            "best_epoch": best["epoch"],
            "best_score": _finite(best["score"]),
            "score": p.score,
            "scores": [_finite(s) for s in scores],
            "stopped_early": bool(stopped),
            "reclusterings": reclusterings,
            "train_samples": int(n),
            "images_trained": images_trained,
            **guard,
        },
    )


def assign_spectral(model: dict, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """New samples (the trained encoder's features) by the vote of their nearest training samples, as
    the stage assigns the rows it did not train on; distances to the pseudo-clusters' centres."""
    z = F.normalize(torch.as_tensor(np.asarray(vectors, dtype=np.float32)), dim=1).numpy()
    clusters, confidence = Clustering.from_tensors(model["rule"]).predict(z)
    return clusters, confidence, distances_to_centres(z, model["centres"].numpy(), clusters)


METHOD = FinetuneMethod(
    "spectral", finetune_spectral, Params, assign_spectral, trains_encoder=lambda p: True, floored=False
)
