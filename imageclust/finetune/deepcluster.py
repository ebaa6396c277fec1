"""DeepCluster (Caron et al. 2018, "Deep Clustering for Unsupervised Learning of Visual Features").

Alternate, every ``reassign_every`` epochs:
1. embed the training images with the current network; PCA-whiten and L2-normalise the features;
   k-means (scikit-learn's or faiss's) into ten times K clusters (the paper over-clusters;
   ``num_clusters``); re-seed empty clusters (section 3.3);
2. reset the classifier on top (a new linear layer: the old one's classes mean nothing now) and
   train network and classifier to predict the pseudo-labels, drawing images uniformly over the
   clusters so that a large cluster cannot dominate the gradient (section 3.3, "trivial solutions").

The network is the pretrain stage's encoder, or its random initialisation with
``pretrain.method: none`` (from scratch, as the paper); a Sobel filter in front is
``pretrain.sobel``. The DeepCluster system's two contrastive variants (``contrastive``):
- ``head``: a projection head on the features, trained with a supervised contrastive loss
  (Khosla et al. 2020) whose classes are the pseudo-labels, added to the classification loss;
- ``views``: two augmented views of each image; NT-Xent between their projections plus both
  views' classification losses.
The final clusters are k-means on the trained network's features, as each epoch's; new rows go to
the nearest centre, with DEC's soft assignment as confidence.

With ``guard`` (by default when the encoder was pretrained), every epoch's network is judged by its
clustering into K in the features it started from (``guard.py``): the best-judged epoch's network
makes the final clusters, and when none beats the cluster stage's assignment, that is returned.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..augment import PresetName, build_augmenter
from ..clustering.base import Clustering, distances_to_centres
from ..config import Int, Section
from ..losses.contrastive import nt_xent, supervised_contrastive
from ..metrics import clustering_accuracy, nmi, purity
from ..models.heads import projection_head
from ..runtime import check_finite_loss
from ..tables import UNLABELED
from .base import FinetuneMethod, FinetuneResult, FinetuneRun
from .guard import BestEpoch, Referee, cluster_stage_kept, warn_if_kept_start
from .images import Images, embed, trainable_encoder
from .pseudo_labels import cluster_features, training_clusters, uniform_cluster_sampler

log = logging.getLogger(__name__)
HINT = "Try a lower finetune.deepcluster.lr"  # when the loss stops being a number


class Params(Section):
    epochs: Int = Field(20, ge=1, description="DeepCluster epochs")
    reassign_every: Int = Field(1, ge=1, description="epochs between two clusterings (each resets the classifier)")
    lr: float = Field(
        1e-3,
        gt=0,
        description="SGD learning rate; the paper's 0.05 is for training from scratch (`pretrain.method: none`)",
    )
    momentum: float = Field(
        0.9, ge=0, lt=1, description="SGD momentum of the network (the reset classifier has none, as the paper's)"
    )
    weight_decay: float = Field(1e-5, ge=0, description="L2 penalty on the weights")
    pca_dim: Int | None = Field(
        None,
        ge=1,
        description=(
            "PCA before k-means (the paper: 256, whitened, of AlexNet's 4096-d features; whitening every "
            "dimension of a small network's 128 amplifies its noise)"
        ),
    )
    whiten: bool = Field(True, description="divide the PCA components by their standard deviation")
    kmeans_backend: Literal["sklearn", "faiss"] = Field("sklearn", description="k-means of each clustering")
    kmeans_n_init: Int = Field(5, ge=1, description="k-means restarts of each clustering (the lowest objective kept)")
    num_clusters: Int | None = Field(
        None,
        ge=2,
        description=(
            "the pseudo-classes of training: the paper over-clusters (10,000 for ImageNet's 1,000 classes) and"
            " found more to help; null: ten times the cluster stage's K, at most one cluster per ten training "
            "images and at least K. The final clustering always has the cluster stage's K"
        ),
    )
    augment: PresetName = Field("gray", description="of the training images")
    contrastive: Literal["none", "head", "views"] = Field(
        "none",
        description=(
            "the DeepCluster system's contrastive variants: `head`, a supervised contrastive loss on a "
            "projection head with the pseudo-labels as classes; `views`, NT-Xent between two augmented views, "
            "beside both views' classification losses"
        ),
    )
    contrastive_weight: float = Field(1.0, ge=0, description="weight of the contrastive loss")
    temperature: float = Field(0.5, gt=0, description="of the contrastive loss")
    projection_dims: list[Int] = Field(
        default_factory=lambda: [128, 64], min_length=1, description="the projection head of the contrastive variants"
    )
    guard: bool | None = Field(
        None,
        description=(
            "keep the epoch whose clustering into K scores best in the starting features (by nearest "
            "neighbours), never worse than the cluster stage's; null: when the encoder was pretrained"
        ),
    )


class DeepClusterNet(nn.Module):
    """Encoder, the classifier on top that each clustering resets, and an optional projection head."""

    def __init__(self, encoder: nn.Module, num_clusters: int, projection_dims: list[int] | None):
        super().__init__()
        self.encoder = encoder
        self.top = nn.Linear(encoder.output_dim, num_clusters)
        self.projector = projection_head(encoder.output_dim, projection_dims) if projection_dims else None

    def reset_top(self) -> None:
        self.top.reset_parameters()

    def forward(self, x: torch.Tensor):
        h = self.encoder(x)
        return self.top(h), (self.projector(h) if self.projector is not None else None)


def _epoch_generators(seed: int, epoch: int, device: torch.device):
    """Every draw of an epoch comes from generators seeded by (seed, epoch): a resumed epoch repeats them."""
    return (np.random.default_rng([seed, epoch]), torch.Generator(device=device).manual_seed(seed * 100_003 + epoch))


def finetune_deepcluster(run: FinetuneRun) -> FinetuneResult:
    """Alternate clustering and training on the training rows' images (module docstring)."""
    p, device, batch_size = run.block, run.device, run.params.batch_size
    torch.manual_seed(run.seed)
    images = Images(run)
    train_rows = np.flatnonzero(run.train)
    train_k = training_clusters(run.num_clusters, len(train_rows), p.num_clusters)  # the final clustering has K
    net = DeepClusterNet(trainable_encoder(run), train_k, p.projection_dims if p.contrastive != "none" else None).to(
        device
    )
    body = [q for name, q in net.named_parameters() if not name.startswith("top.")]
    optimizer = torch.optim.SGD(body, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    top_optimizer = torch.optim.SGD(net.top.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    augment = build_augmenter(p.augment)
    labelled = (run.labels[run.train] != UNLABELED).all()
    best = None
    if run.guarded(p.guard):
        best = BestEpoch.from_start(Referee.of_run(run), run.initial_clusters[train_rows])

    def encoder_snapshot() -> dict:
        return {name: t.detach().cpu().clone() for name, t in net.encoder.state_dict().items()}

    def judge(epoch: int, features: np.ndarray) -> dict:
        """Offer the network after ``epoch`` epochs to the guard, by its clustering into K."""
        labels = cluster_features(features, run.num_clusters, p, run.seed + epoch)[2]
        score = best.offer(epoch, labels, encoder_snapshot)
        log.info("deepcluster after %d epochs: guard score %.4f (cluster stage %.4f)", epoch, score, best.start_score)
        row = {"deepcluster/guard_score": score}
        if labelled:  # diagnostics only: nothing reads them
            row["diagnostic/guard_acc_with_labels"] = clustering_accuracy(run.labels[train_rows], labels)
        return row

    pseudo, previous, start = None, None, 0
    resumed = run.resume()
    if resumed is not None:
        start, pseudo, previous = resumed["epoch"], resumed["pseudo"], resumed["previous"]
        net.load_state_dict(resumed["net"])
        optimizer.load_state_dict(resumed["optimizer"])
        top_optimizer.load_state_dict(resumed["top_optimizer"])
        if best is not None:
            best.restore(resumed["guard"], resumed["guard_encoder"])

    def state() -> dict:
        return {
            "epoch": epoch + 1,
            "pseudo": pseudo,
            "previous": previous,
            "net": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "top_optimizer": top_optimizer.state_dict(),
            "guard": best.state() if best else None,
            "guard_encoder": best.snapshot if best else None,
        }

    images_trained = 0  # by this run, for images/s: not by the run it resumed
    for epoch in run.epochs(start, p.epochs, "deepcluster"):
        rng, generator = _epoch_generators(run.seed, epoch, device)
        row = {}
        if epoch % p.reassign_every == 0:
            features = embed(net.encoder, images, train_rows, batch_size, normalize=False)
            if best is not None:
                row.update(judge(epoch, features))
            _, clustering, labels, info = cluster_features(features, train_k, p, run.seed + epoch)
            previous, pseudo = pseudo, torch.from_numpy(labels)
            net.reset_top()
            top_optimizer = torch.optim.SGD(net.top.parameters(), lr=p.lr, weight_decay=p.weight_decay)
            row["deepcluster/reseeded_clusters"] = info["reseeded"]
            if previous is not None:  # the paper's measure of stability between two clusterings
                row["deepcluster/nmi_to_previous"] = nmi(previous.numpy(), labels)
            if labelled:  # diagnostics only (the DeepCluster system's per-epoch scores): nothing reads them
                truth = run.labels[run.train]
                row["diagnostic/nmi_with_labels"] = nmi(truth, labels)
                # over-clustered pseudo-labels: each cluster counts as its majority class (IIC's many-to-one)
                row["diagnostic/purity_with_labels"] = purity(truth, labels)
                if train_k == run.num_clusters:
                    row["diagnostic/acc_with_labels"] = clustering_accuracy(truth, labels)
        net.train()
        order = torch.from_numpy(uniform_cluster_sampler(pseudo.numpy(), len(train_rows), rng))
        totals = np.zeros(3)
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size) if len(order) - i >= 2]
        for step, batch in enumerate(batches):
            x = images.batch(train_rows[batch.numpy()])
            target = pseudo[batch].to(device)
            logits, z = net(augment(x, generator))
            classify = F.cross_entropy(logits, target)
            contrast = torch.zeros((), device=device)
            if p.contrastive == "head":
                contrast = supervised_contrastive(z, target, p.temperature)
            elif p.contrastive == "views":
                logits2, z2 = net(augment(x, generator))
                classify = (classify + F.cross_entropy(logits2, target)) / 2
                contrast = nt_xent(z, z2, p.temperature)
            loss = classify + p.contrastive_weight * contrast
            optimizer.zero_grad(set_to_none=True)
            top_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            top_optimizer.step()
            totals += [
                check_finite_loss(loss.item(), "finetune deepcluster", epoch, step, HINT),
                classify.item(),
                contrast.item(),
            ]
            images_trained += len(batch) * (2 if p.contrastive == "views" else 1)
        totals /= max(1, len(batches))
        row.update({"deepcluster/loss": totals[0], "deepcluster/classification": totals[1]})
        if p.contrastive != "none":
            row["deepcluster/contrastive"] = totals[2]
        log.info("deepcluster epoch %d/%d: loss %.4f", epoch + 1, p.epochs, totals[0])
        run.end_epoch(epoch, p.epochs, row, state)

    if best is not None:
        judge(p.epochs, embed(net.encoder, images, train_rows, batch_size, normalize=False))
        warn_if_kept_start("deepcluster", best)
        if best.kept_start:
            return cluster_stage_kept(run, {"train_samples": len(train_rows), "epochs": p.epochs, **best.stats()})
        net.encoder.load_state_dict(best.snapshot)
    # the final clusters: k-means on the (best-judged) network's features, every row assigned
    features = embed(net.encoder, images, np.arange(len(run.vectors)), batch_size, normalize=False)
    space, clustering, labels, info = cluster_features(features[run.train], run.num_clusters, p, run.seed + p.epochs)
    clusters, confidence = clustering.predict(space(features))
    clusters[run.train] = labels
    stats = {
        "train_samples": len(train_rows),
        "epochs": p.epochs,
        "images_trained": images_trained,
        "contrastive": p.contrastive,
        "train_k": train_k,
        "final_reseeded_clusters": info["reseeded"],
        "nmi_to_last_pseudo_labels": nmi(pseudo.numpy(), labels),
        **(best.stats() if best else {}),
    }
    model = {
        "centroids": torch.from_numpy(clustering.centroids),
        **space.to_tensors(),
        "top": net.top.cpu().state_dict(),
        "rule": clustering.to_tensors(),
    }
    return FinetuneResult(
        clusters=clusters.astype(np.int64), confidence=confidence, model=model, encoder=net.encoder, stats=stats
    )


def assign_deepcluster(model: dict, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """New samples (the trained encoder's features) by the final k-means: the saved PCA and L2, then
    the nearest centroid; distances to it in that space."""
    x = np.asarray(vectors, dtype=np.float32)
    if "pca_mean" in model:
        x = (x - model["pca_mean"].numpy()) @ model["pca_components"].numpy().T / model["pca_scale"].numpy()
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    clustering = Clustering.from_tensors(model["rule"])
    clusters, confidence = clustering.predict(x)
    return clusters, confidence, distances_to_centres(x, clustering.centroids, clusters)


METHOD = FinetuneMethod(
    "deepcluster", finetune_deepcluster, Params, assign_deepcluster, trains_encoder=lambda p: True, floored=False
)
