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
from ..clustering import kmeans
from ..clustering.base import Clustering, distances_to_centres
from ..config import Int, Section
from ..losses.contrastive import nt_xent, supervised_contrastive
from ..metrics import clustering_accuracy, nmi, purity
from ..models.heads import projection_head
from ..runtime import check_finite_loss
from ..tables import UNLABELED
from .base import FinetuneMethod, FinetuneResult, FinetuneRun
from .images import Images, embed, trainable_encoder

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


def uniform_cluster_sampler(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` indices drawn evenly over the non-empty clusters of ``labels`` (DeepCluster's
    ``UnifLabelSampler``): each cluster gives ``size // clusters + 1`` indices (with replacement only
    when it holds fewer), the lot is shuffled and cut to ``size``."""
    members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    per_cluster = size // len(members) + 1
    drawn = np.concatenate([rng.choice(m, per_cluster, replace=len(m) < per_cluster) for m in members])
    rng.shuffle(drawn)
    return drawn[:size]


def reseed_empty_clusters(
    x: np.ndarray, labels: np.ndarray, centroids: np.ndarray, rng: np.random.Generator, scale: float = 1e-4
) -> tuple[np.ndarray, np.ndarray, int]:
    """DeepCluster's rule for an empty cluster (section 3.3): take a random non-empty cluster, give
    the empty one its centre plus a small perturbation, and split the non-empty cluster's points
    between the two centres by distance. Returns new labels, centroids and the number re-seeded."""
    labels, centroids = labels.copy(), centroids.copy()
    k, reseeded = len(centroids), 0
    for empty in range(k):
        if (labels == empty).any():
            continue
        sizes = np.bincount(labels, minlength=k)
        donor = int(rng.choice(np.flatnonzero(sizes > 1)))  # a cluster of one cannot be split
        noise = scale * rng.standard_normal(centroids.shape[1])
        centroids[empty], centroids[donor] = centroids[donor] + noise, centroids[donor] - noise
        points = np.flatnonzero(labels == donor)
        closer = ((x[points] - centroids[empty]) ** 2).sum(1) < ((x[points] - centroids[donor]) ** 2).sum(1)
        if not closer.any() or closer.all():  # identical points: split them in half
            closer = np.arange(len(points)) < len(points) // 2
        labels[points[closer]] = empty
        reseeded += 1
    return labels, centroids, reseeded


class ClusterSpace:
    """PCA whitening then L2 normalisation, fitted on the training features (as DeepCluster's
    ``preprocess_features``)."""

    def __init__(self, x: np.ndarray, dim: int | None, whiten: bool, seed: int):
        from sklearn.decomposition import PCA

        self.pca = None
        if dim is not None:
            self.pca = PCA(n_components=min(dim, *x.shape), whiten=whiten, random_state=seed).fit(x)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.pca is not None:
            x = self.pca.transform(x)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x.astype(np.float32)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """What applying the transform takes: (x - mean) @ components.T / scale, then L2."""
        if self.pca is None:
            return {}
        scale = np.sqrt(self.pca.explained_variance_) if self.pca.whiten else np.ones(self.pca.n_components_)
        return {
            name: torch.from_numpy(np.asarray(v, dtype=np.float32))
            for name, v in (
                ("pca_mean", self.pca.mean_),
                ("pca_components", self.pca.components_),
                ("pca_scale", scale),
            )
        }


def cluster_features(x: np.ndarray, k: int, p, seed: int) -> tuple[ClusterSpace, Clustering, np.ndarray, dict]:
    """One DeepCluster clustering of the training features ``x``: the space, the k-means model, the
    labels after re-seeding empty clusters, and statistics."""
    space = ClusterSpace(x, p.pca_dim, p.whiten, seed)
    z = space(x)
    params = kmeans.Params(backend=p.kmeans_backend, n_init=p.kmeans_n_init, max_iter=100)
    clustering = kmeans.fit_kmeans(z, k, params, seed)
    nearest = clustering.predict(z)[0].astype(np.int64)
    labels, clustering.centroids, reseeded = reseed_empty_clusters(
        z, nearest, clustering.centroids, np.random.default_rng(seed)
    )
    return space, clustering, labels, {"reseeded": reseeded, **clustering.stats}


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


def training_clusters(k: int, samples: int, requested: int | None = None) -> int:
    """The number of pseudo-classes DeepCluster trains on: ``requested``, or the paper's ten times
    the number of classes (10,000 k-means clusters for ImageNet's 1,000), kept to at least ten
    images per cluster on average and never below ``k``. Over-clustering gives finer pseudo-labels
    that a class can be split across without being merged with another."""
    if requested is not None:
        return requested
    return max(k, min(10 * k, samples // 10))


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
    pseudo, previous, start = None, None, 0
    resumed = run.resume()
    if resumed is not None:
        start, pseudo, previous = resumed["epoch"], resumed["pseudo"], resumed["previous"]
        net.load_state_dict(resumed["net"])
        optimizer.load_state_dict(resumed["optimizer"])
        top_optimizer.load_state_dict(resumed["top_optimizer"])

    def state() -> dict:
        return {
            "epoch": epoch + 1,
            "pseudo": pseudo,
            "previous": previous,
            "net": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "top_optimizer": top_optimizer.state_dict(),
        }

    images_trained = 0  # by this run, for images/s: not by the run it resumed
    for epoch in run.epochs(start, p.epochs, "deepcluster"):
        rng, generator = _epoch_generators(run.seed, epoch, device)
        row = {}
        if epoch % p.reassign_every == 0:
            features = embed(net.encoder, images, train_rows, batch_size, normalize=False)
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

    # the final clusters: k-means on the trained network's features, every row assigned
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


METHOD = FinetuneMethod("deepcluster", finetune_deepcluster, Params, assign_deepcluster, trains_encoder=lambda p: True)
