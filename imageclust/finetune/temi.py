"""TEMI on extracted features (Adaloglou et al., BMVC 2023, "Exploring the limits of deep image
clustering using pretrained models").

Kept from the paper: cluster heads on frozen pretrained features; each training sample is paired
with a random one of its k nearest neighbours (mined once, by cosine similarity); several heads
are trained at once as a student, and a teacher that is the exponential moving average of the
student provides the targets; the loss is the weighted beta-PMI of ``losses.temi_loss`` with a
running estimate of the teacher's cluster marginal; the kept head is the one with the lowest loss
(no labels needed), here on all training samples paired with their first neighbour.

Differences: the heads are ``models.cluster_head`` (linear, or one hidden layer with batch norm),
not DINO heads; no image augmentations (the neighbour is the second view) and no learning-rate
schedule. As in the official code, the teacher's temperature is 0.1 and its momentum rises from 0.996
to 1 on a cosine (with a sharper 0.04 and a constant momentum, CIFAR-10's largest cluster was 1.52x
the mean size and ACC 0.560; with these, 1.11x and 0.576).
Predictions are the teacher's kept head through a softmax at the *student* temperature: the argmax
does not depend on it, and the confidences are on the scale the student was trained at.

``init_from_centroids`` starts the linear heads from the normalised means of the cluster stage's
clusters (as the TEMI system starts from k-means centroids). All heads then start, and stay,
equal, so ``num_heads: 1`` is enough there.
"""

from __future__ import annotations

import copy
import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from ..clustering.base import cluster_means, distances_to_centres
from ..config import Int, Section
from ..losses.clustering import temi_loss
from ..models.heads import MultiHead
from ..runtime import check_finite_loss
from .base import FinetuneMethod, FinetuneResult, FinetuneRun, shuffled_batches
from .scan import mine_neighbors, neighbor_label_agreement
from .size_prior import size_prior

log = logging.getLogger(__name__)
HINT = "Try a lower finetune.temi.lr"  # when the loss stops being a number


class Params(Section):
    epochs: Int = Field(100, ge=1, description="TEMI epochs")
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate (the paper's)")
    weight_decay: float = Field(1e-4, ge=0, description="L2 penalty on the weights")
    num_heads: Int = Field(
        1,
        ge=1,
        description=(
            "heads trained at once; the lowest-loss one is kept. Heads started from the centroids stay equal; "
            "from random starts (`init_from_centroids: false`) the paper uses many"
        ),
    )
    hidden_dim: Int = Field(
        0, ge=0, description="0: each head is the cosine similarity to K prototypes; else an MLP of this width first"
    )
    num_neighbors: Int = Field(
        25, ge=1, description="each sample is paired with a random one of its nearest neighbours"
    )
    beta: float = Field(
        0.6, gt=0, le=1, description="exponent of the PMI: below 1 it damps confident pairs that disagree"
    )
    student_temperature: float = Field(0.1, gt=0, description="also the temperature of the saved predictions")
    teacher_temperature: float = Field(
        0.1, gt=0, description="temperature of the teacher's targets (the official code's 0.1)"
    )
    teacher_momentum: float = Field(0.996, ge=0, le=1, description="the teacher is this moving average of the student")
    teacher_momentum_final: float = Field(
        1.0, ge=0, le=1, description="the momentum rises to this on a cosine over training (DINO, TEMI's code)"
    )
    probs_momentum: float = Field(
        0.9, ge=0, lt=1, description="of the running estimate of the teacher's cluster marginal"
    )
    init_from_centroids: bool = Field(
        True,
        description=(
            "the heads' prototypes start at the cluster stage's cluster means, as the TEMI system starts from "
            "k-means; needs `hidden_dim: 0`"
        ),
    )

    @model_validator(mode="after")
    def _centroids_need_linear_heads(self):
        if self.init_from_centroids and self.hidden_dim != 0:
            raise ValueError(
                "init_from_centroids=true needs hidden_dim=0 (linear heads whose weights are the centroids)"
            )
        return self


class CosineHead(nn.Module):
    """DINO's head as TEMI uses it, small: an optional MLP, then the cosine similarity of the
    L2-normalised result to K L2-normalised prototypes (DINO's weight-normalised last layer with
    its norm fixed at 1). Logits stay in [-1, 1], so the temperatures alone set how sharp the
    predictions are and no head can sharpen itself by growing its weights."""

    def __init__(self, in_dim: int, hidden_dim: int, num_clusters: int):
        super().__init__()
        self.mlp = (
            nn.Identity()
            if hidden_dim == 0
            else nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim))
        )
        self.prototypes = nn.Parameter(torch.randn(num_clusters, hidden_dim or in_dim) / (hidden_dim or in_dim) ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=1) @ F.normalize(self.prototypes, dim=1).t()


def centroid_init(model: MultiHead, x: torch.Tensor, clusters: np.ndarray) -> None:
    """Set every (linear) head's prototypes to the L2-normalised means of the L2-normalised rows of
    ``x`` per cluster; a cluster with no rows keeps its random prototype."""
    x = F.normalize(x, dim=1)
    clusters = torch.as_tensor(clusters, dtype=torch.long)
    num_clusters = model.heads[0].prototypes.shape[0]
    sums = torch.zeros(num_clusters, x.shape[1], dtype=x.dtype).index_add_(0, clusters, x)
    used = torch.bincount(clusters, minlength=num_clusters) > 0
    with torch.no_grad():
        for head in model.heads:
            head.prototypes[used] = F.normalize(sums[used], dim=1)  # normalising the sum normalises the mean


def _by_view(logits: list[torch.Tensor]) -> torch.Tensor:
    """The heads' logits of a batch of samples followed by their neighbours as (heads, 2, batch, K)."""
    return torch.stack(logits).unflatten(1, (2, -1))


@torch.no_grad()
def head_losses(
    student: MultiHead,
    teacher: MultiHead,
    x: torch.Tensor,
    partner: torch.Tensor,
    marginal: torch.Tensor,
    p,
    batch_size: int = 4096,
    prior: torch.Tensor | None = None,
) -> list[float]:
    """Each head's TEMI loss over all rows of ``x`` paired with ``x[partner]`` (eval mode)."""
    student.eval()
    teacher.eval()
    total = torch.zeros(len(marginal), device=x.device)
    for i in range(0, len(x), batch_size):
        pair = torch.cat([x[i : i + batch_size], x[partner[i : i + batch_size]]])
        losses = temi_loss(
            _by_view(student(pair)),
            _by_view(teacher(pair)),
            marginal,
            p.beta,
            p.student_temperature,
            p.teacher_temperature,
            prior,
        )[0]
        total += losses * (len(pair) // 2)
    return (total / len(x)).tolist()


def teacher_momentum(p: Params, step: int, total: int) -> float:
    """DINO's cosine schedule, from ``teacher_momentum`` at the first step to ``teacher_momentum_final``."""
    return (
        p.teacher_momentum_final
        - (p.teacher_momentum_final - p.teacher_momentum) * (math.cos(math.pi * step / max(total, 1)) + 1) / 2
    )


@torch.no_grad()
def predict(head: nn.Module, x: torch.Tensor, temperature: float, batch_size: int = 4096) -> torch.Tensor:
    head.eval()
    return torch.cat(
        [F.softmax(head(x[i : i + batch_size]) / temperature, dim=1) for i in range(0, len(x), batch_size)]
    )


def finetune_temi(run: FinetuneRun) -> FinetuneResult:
    """TEMI on the training rows; every row gets the probabilities of the teacher's kept head."""
    p, device = run.block, run.device
    torch.manual_seed(run.seed)
    generator = torch.Generator().manual_seed(run.seed)
    x_all = F.normalize(torch.as_tensor(np.array(run.vectors, dtype=np.float32)), dim=1)
    train_rows = np.flatnonzero(run.train)
    x = x_all[torch.from_numpy(train_rows)]
    neighbors = mine_neighbors(x, p.num_neighbors)
    stats = {"train_samples": len(x), "num_neighbors": int(neighbors.shape[1])}
    stats.update(neighbor_label_agreement(run.labels[run.train], neighbors))
    prior, prior_stats = size_prior(run)
    stats.update(prior_stats)

    student = MultiHead(CosineHead(x.shape[1], p.hidden_dim, run.num_clusters) for _ in range(p.num_heads))
    if p.init_from_centroids:
        centroid_init(student, x, run.initial_clusters[train_rows])
    student.to(device)
    teacher = copy.deepcopy(student).requires_grad_(False)
    optimizer = torch.optim.AdamW(student.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    marginal = torch.full((p.num_heads, run.num_clusters), 1 / run.num_clusters, device=device)
    x, neighbors = x.to(device), neighbors.to(device)
    start = 0
    resumed = run.resume()
    if resumed is not None:
        start = resumed["epoch"]
        student.load_state_dict(resumed["student"])
        teacher.load_state_dict(resumed["teacher"])
        optimizer.load_state_dict(resumed["optimizer"])
        marginal.copy_(resumed["marginal"])
        generator.set_state(resumed["generator"])

    def state() -> dict:
        return {
            "epoch": epoch + 1,
            "student": student.state_dict(),
            "teacher": teacher.state_dict(),
            "optimizer": optimizer.state_dict(),
            "marginal": marginal.cpu(),
            "generator": generator.get_state(),
        }

    for epoch in run.epochs(start, p.epochs, "temi"):
        student.train()
        teacher.train()  # its batch norm, if any, keeps running statistics of its own
        totals = np.zeros(3)
        batches = shuffled_batches(len(x), run.params.batch_size, generator)
        for step, batch in enumerate(batches):
            momentum = teacher_momentum(p, epoch * len(batches) + step, p.epochs * len(batches))
            pick = torch.randint(neighbors.shape[1], (len(batch),), generator=generator)
            batch = batch.to(device)
            pair = torch.cat([x[batch], x[neighbors[batch, pick.to(device)]]])
            with torch.no_grad():
                teacher_logits = _by_view(teacher(pair))
            losses, pmi, weight = temi_loss(
                _by_view(student(pair)),
                teacher_logits,
                marginal,
                p.beta,
                p.student_temperature,
                p.teacher_temperature,
                prior,
            )
            optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            optimizer.step()
            with torch.no_grad():
                for t, s in zip(teacher.parameters(), student.parameters()):
                    t.lerp_(s, 1 - momentum)  # m * t + (1 - m) * s
                # the marginal used by this batch's loss is the one before it
                batch_marginal = F.softmax(teacher_logits / p.teacher_temperature, dim=-1).mean((1, 2))
                marginal.lerp_(batch_marginal, 1 - p.probs_momentum)
            totals += [
                check_finite_loss(losses.mean().item(), "finetune temi", epoch, step, HINT),
                pmi.mean().item(),
                weight.mean().item(),
            ]
        totals /= len(batches)
        usage = -(marginal * marginal.clamp_min(1e-12).log()).sum(1).mean().item()
        # plain floats: the checkpoint keeps the rows and loads with weights_only (no numpy scalars)
        row = {
            "temi/loss": float(totals[0]),
            "temi/pmi": float(totals[1]),
            "temi/weight": float(totals[2]),
            "temi/marginal_entropy": usage,
        }
        run.end_epoch(epoch, p.epochs, row, state)

    losses = head_losses(student, teacher, x, neighbors[:, 0], marginal, p, prior=prior)
    best = int(np.argmin(losses))
    stats.update(head_losses=[round(h, 4) for h in losses], best_head=best)
    head = teacher.heads[best]
    probs = predict(head, x_all.to(device), p.student_temperature).cpu().numpy()
    centres = cluster_means(x_all.numpy()[run.train], probs[run.train].argmax(1), run.num_clusters)
    return FinetuneResult.from_probabilities(
        probs,
        model={
            "head": head.cpu().state_dict(),
            "student_head": student.heads[best].cpu().state_dict(),
            "best_head": best,
            "temperature": p.student_temperature,
            "hidden_dim": p.hidden_dim,
            "centres": torch.from_numpy(centres),
        },
        stats=stats,
    )


def assign_temi(model: dict, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """New samples' clusters by the kept teacher head, confidences and distances to the cluster means
    (on the L2-normalised features)."""
    x = F.normalize(torch.as_tensor(np.asarray(vectors, dtype=np.float32)), dim=1)
    head = CosineHead(x.shape[1], model["hidden_dim"], model["num_clusters"])
    head.load_state_dict(model["head"])
    probs = predict(head, x, model["temperature"]).numpy()
    clusters = probs.argmax(1)
    return clusters, probs.max(1), distances_to_centres(x.numpy(), model["centres"].numpy(), clusters)


METHOD = FinetuneMethod("temi", finetune_temi, Params, assign_temi)
