"""SCAN on extracted features (Van Gansbeke et al. 2020, "SCAN: Learning to Classify Images
without Labels").

1. Mine each training sample's nearest neighbours in the (L2-normalised) feature space.
2. Train several cluster heads at once with the SCAN loss: a sample and a random one of its
   neighbours should fall in the same confident cluster, while the entropy of the mean
   prediction keeps all clusters in use. Keep the head with the lowest loss (no labels needed).
3. Self-label: the confident predictions of the kept head become pseudo-labels for perturbed
   copies of the same samples.

By default the backbone stays frozen, so SCAN's image augmentations become perturbations of the
feature vector (Gaussian noise and dropout, then re-normalisation): this keeps the stage cheap
enough to rerun on every ``cluster.k`` change. With ``finetune.scan.train_backbone`` the encoder is
trained too, on augmented images, as the paper does (neighbours stay those of the pretrained
features, as the paper mines them once).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..augment import PresetName, build_augmenter
from ..clustering.base import cluster_means, distances_to_centres
from ..config import Int, Section
from ..losses.clustering import confident_self_label_loss, scan_loss
from ..models.heads import MultiHead, cluster_head
from ..runtime import check_finite_loss
from ..tables import UNLABELED
from .base import FinetuneMethod, FinetuneResult, FinetuneRun, shuffled_batches
from .size_prior import size_prior

log = logging.getLogger(__name__)
HINT = "Try a lower finetune.scan.lr"  # when the loss stops being a number


class Params(Section):
    epochs: Int = Field(60, ge=1, description="SCAN epochs")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate of the heads")
    weight_decay: float = Field(1e-4, ge=0, description="L2 penalty on the weights")
    num_neighbors: Int = Field(10, ge=1, description="neighbours mined per sample in the feature space")
    entropy_weight: float = Field(5.0, ge=0, description="weight of the entropy term that keeps clusters in use")
    num_heads: Int = Field(5, ge=1, description="heads trained at once; the lowest-loss one is kept")
    hidden_dim: Int = Field(256, ge=0, description="hidden layer of a head; 0 makes it linear")
    feature_noise: float = Field(
        0.1, ge=0, description="norm of the Gaussian noise that stands in for image augmentation on frozen features"
    )
    self_label_epochs: Int = Field(20, ge=0, description="self-labelling epochs after SCAN")
    confidence_threshold: float = Field(
        0.99, gt=0, lt=1, description="confidence that makes a prediction a pseudo-label"
    )
    train_backbone: bool = Field(
        False,
        description="train the encoder too, on augmented images, as the paper does (needs `extract.backbone: encoder`)",
    )
    backbone_lr: float = Field(1e-4, gt=0, description="the encoder's learning rate when `train_backbone`")
    augment: PresetName = Field(
        "gray",
        description=(
            "`train_backbone`: the augmentation of the anchors, neighbours and self-labelled views (their "
            "pseudo-labels come from the unaugmented images)"
        ),
    )


def mine_neighbors(x: torch.Tensor, num_neighbors: int, chunk: int = 2048) -> torch.Tensor:
    """Indices of the ``num_neighbors`` most cosine-similar rows of ``x`` for each row, self excluded."""
    x = F.normalize(x, dim=1)
    k = min(num_neighbors, len(x) - 1)
    out = []
    for start in range(0, len(x), chunk):
        sim = x[start : start + chunk] @ x.t()
        rows = torch.arange(sim.shape[0], device=x.device)
        sim[rows, rows + start] = float("-inf")
        out.append(sim.topk(k, dim=1).indices)
    return torch.cat(out)


def neighbor_label_agreement(labels: np.ndarray, neighbors: torch.Tensor) -> dict:
    """SCAN's diagnostic, when every row is labelled: how often a mined neighbour shares its anchor's
    class. Nothing reads it; it bounds what neighbour-based methods can reach."""
    if (labels == UNLABELED).any():
        return {}
    return {"neighbor_label_agreement": float((labels[neighbors.cpu().numpy()] == labels[:, None]).mean())}


def perturb(x: torch.Tensor, noise: float, dropout: float, generator: torch.Generator) -> torch.Tensor:
    """A random view of unit feature vectors: Gaussian noise of norm about ``noise``, feature dropout.
    The draws come from ``generator`` on its own device (the CPU), then move to ``x``'s."""
    if noise:
        x = x + noise / x.shape[1] ** 0.5 * torch.randn(x.shape, generator=generator).to(x.device)
    if dropout:
        keep = torch.rand(x.shape, generator=generator).to(x.device) >= dropout
        x = x * keep
    return F.normalize(x, dim=1)


@torch.no_grad()
def predict(head: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    head.eval()
    return torch.cat([F.softmax(head(x[i : i + batch_size]), dim=1) for i in range(0, len(x), batch_size)])


class _Views:
    """Anchors, neighbours and their views: perturbed feature vectors, or augmented images through
    the encoder being trained."""

    def __init__(self, run: FinetuneRun, x: torch.Tensor, generator: torch.Generator):
        p = run.block
        self.x, self.noise, self.generator = x, p.feature_noise, generator
        self.encoder = None
        if p.train_backbone:
            from .images import Images, trainable_encoder

            self.encoder = trainable_encoder(run)
            self.images = Images(run)
            self.train_rows = np.flatnonzero(run.train)
            # one augmentation for both steps: a stronger one for self-labelling (random erasing at
            # SCAN's strength) wrecked 8-px digits, and the preset is what suits the images
            self.augment = build_augmenter(p.augment)
            self.image_generator = torch.Generator(device=run.device).manual_seed(run.seed)

    def _encode(self, rows: torch.Tensor, augmenter) -> torch.Tensor:
        images = self.images.batch(self.train_rows[rows.cpu().numpy()])
        if augmenter is not None:
            images = augmenter(images, self.image_generator)
        return F.normalize(self.encoder(images), dim=1)

    def weak_view(self, rows: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            return perturb(self.x[rows], self.noise, 0.0, self.generator)
        return self._encode(rows, self.augment)

    def strong_view(self, rows: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            return perturb(self.x[rows], 2 * self.noise, 0.1, self.generator)
        return self._encode(rows, self.augment)

    def clean(self, rows: torch.Tensor) -> torch.Tensor:
        """The pseudo-labels' input: the features themselves, or the unaugmented images through the
        encoder in evaluation mode (the targets must not depend on the batch's statistics)."""
        if self.encoder is None:
            return self.x[rows]
        self.encoder.eval()
        try:
            return self._encode(rows, None)
        finally:
            self.encoder.train()

    def refresh(self, batch_size: int) -> None:
        """The features of the trained encoder (for choosing a head and the final predictions)."""
        if self.encoder is not None:
            from .images import embed

            self.x = torch.from_numpy(embed(self.encoder, self.images, self.train_rows, batch_size)).to(self.x.device)

    def state(self) -> dict:
        state = {"generator": self.generator.get_state()}
        if self.encoder is not None:
            state.update(encoder=self.encoder.state_dict(), image_generator=self.image_generator.get_state())
        return state

    def load(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        if self.encoder is not None:
            self.encoder.load_state_dict(state["encoder"])
            self.image_generator.set_state(state["image_generator"])


def finetune_scan(run: FinetuneRun) -> FinetuneResult:
    """SCAN's two steps on the training rows; every row gets the kept head's probabilities."""
    p, device = run.block, run.device
    torch.manual_seed(run.seed)
    generator = torch.Generator().manual_seed(run.seed)
    x_all = F.normalize(torch.as_tensor(np.array(run.vectors, dtype=np.float32)), dim=1)
    x = x_all[torch.from_numpy(np.flatnonzero(run.train))]
    neighbors = mine_neighbors(x, p.num_neighbors)
    stats = {"train_samples": len(x), "num_neighbors": int(neighbors.shape[1])}
    stats.update(neighbor_label_agreement(run.labels[run.train], neighbors))
    prior, prior_stats = size_prior(run)
    stats.update(prior_stats)

    model = MultiHead(cluster_head(x.shape[1], p.hidden_dim, run.num_clusters) for _ in range(p.num_heads)).to(device)
    views = _Views(run, x.to(device), generator)
    groups = [{"params": model.parameters(), "lr": p.lr}]
    if views.encoder is not None:
        groups.append({"params": views.encoder.parameters(), "lr": p.backbone_lr})
    optimizer = torch.optim.Adam(groups, weight_decay=p.weight_decay)
    neighbors = neighbors.to(device)
    total_epochs = p.epochs + p.self_label_epochs
    best, head, head_optimizer = None, None, None
    start = 0
    resumed = run.resume()
    if resumed is not None:
        start = resumed["epoch"]
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        views.load(resumed["views"])
        best = resumed["best"]
        stats.update(resumed["stats"])

    def choose_head() -> int:
        """The head with the lowest SCAN loss on all training anchors and their first neighbours."""
        views.refresh(run.params.batch_size)
        with torch.no_grad():
            model.eval()
            head_losses = [
                float(scan_loss(a, n, p.entropy_weight, prior)[0])
                for a, n in zip(model(views.x), model(views.x[neighbors[:, 0]]))
            ]
        chosen = int(np.argmin(head_losses))
        stats.update(head_losses=[round(h, 4) for h in head_losses], best_head=chosen)
        stats["scan_confident_fraction"] = float(
            (predict(model.heads[chosen], views.x).max(1).values > p.confidence_threshold).float().mean()
        )
        return chosen

    def self_label_optimizer():
        params = list(model.heads[best].parameters())
        if views.encoder is not None:
            params = [{"params": params, "lr": p.lr}, {"params": views.encoder.parameters(), "lr": p.backbone_lr}]
        return torch.optim.Adam(params, lr=p.lr, weight_decay=p.weight_decay)

    if best is not None and start > p.epochs:
        head_optimizer = self_label_optimizer()
        head_optimizer.load_state_dict(resumed["head_optimizer"])

    def state() -> dict:
        return {
            "epoch": epoch + 1,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "views": views.state(),
            "best": best,
            "stats": stats,
            "head_optimizer": head_optimizer.state_dict() if head_optimizer is not None else None,
        }

    for epoch in run.epochs(start, total_epochs, "scan"):
        if epoch < p.epochs:
            model.train()
            totals = np.zeros(3)
            batches = shuffled_batches(len(x), run.params.batch_size, generator)
            for step, batch in enumerate(batches):
                pick = torch.randint(neighbors.shape[1], (len(batch),), generator=generator)
                anchor = views.weak_view(batch.to(device))
                neighbor = views.weak_view(neighbors[batch.to(device), pick.to(device)])
                losses = [scan_loss(a, n, p.entropy_weight, prior) for a, n in zip(model(anchor), model(neighbor))]
                loss = torch.stack([total for total, _, _ in losses]).sum()
                check_finite_loss(loss.item(), "finetune scan", epoch, step, HINT)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                totals += [np.mean([part.item() for part in parts]) for parts in zip(*losses)]
            totals /= len(batches)
            row = {"scan/loss": totals[0], "scan/consistency": totals[1], "scan/entropy": totals[2]}
            if epoch + 1 == p.epochs:
                best = choose_head()
        else:
            if head_optimizer is None:
                head_optimizer = self_label_optimizer()
            head = model.heads[best]
            head.train()
            total, confident = 0.0, 0.0
            batches = shuffled_batches(len(x), run.params.batch_size, generator)
            for step, batch in enumerate(batches):
                batch = batch.to(device)
                with torch.no_grad():
                    clean = head(views.clean(batch))
                loss, fraction = confident_self_label_loss(
                    clean, head(views.strong_view(batch)), p.confidence_threshold
                )
                head_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                head_optimizer.step()
                total += check_finite_loss(loss.item(), "finetune scan (self-labelling)", epoch, step, HINT)
                confident += fraction
            row = {"selflabel/loss": total / len(batches), "selflabel/confident_fraction": confident / len(batches)}
        run.end_epoch(epoch, total_epochs, row, state)

    head = model.heads[best]
    if views.encoder is not None:  # every row through the trained encoder
        from .images import embed

        x_all = torch.from_numpy(embed(views.encoder, views.images, np.arange(len(run.vectors)), run.params.batch_size))
    probs = predict(head, x_all.to(device)).cpu().numpy()
    stats["final_confident_fraction"] = float((probs[run.train].max(1) > p.confidence_threshold).mean())
    centres = cluster_means(x_all.numpy()[run.train], probs[run.train].argmax(1), run.num_clusters)
    return FinetuneResult.from_probabilities(
        probs,
        model={
            "head": head.cpu().state_dict(),
            "best_head": best,
            "hidden_dim": p.hidden_dim,
            "centres": torch.from_numpy(centres),
        },
        encoder=views.encoder,
        stats=stats,
    )


def assign_scan(model: dict, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """New samples' clusters by the kept head, confidences and distances to the cluster means (on the
    L2-normalised features the head reads)."""
    x = F.normalize(torch.as_tensor(np.asarray(vectors, dtype=np.float32)), dim=1)
    head = cluster_head(x.shape[1], model["hidden_dim"], model["num_clusters"])
    head.load_state_dict(model["head"])
    probs = predict(head, x).numpy()
    clusters = probs.argmax(1)
    return clusters, probs.max(1), distances_to_centres(x.numpy(), model["centres"].numpy(), clusters)


METHOD = FinetuneMethod("scan", finetune_scan, Params, assign_scan, trains_encoder=lambda p: p.train_backbone)
