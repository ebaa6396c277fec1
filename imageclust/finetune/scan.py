"""SCAN on extracted features (Van Gansbeke et al. 2020, "SCAN: Learning to Classify Images
without Labels").

1. Mine each training sample's nearest neighbours in the (L2-normalised) feature space.
2. Train several cluster heads at once with the SCAN loss: a sample and a random one of its
   neighbours should fall in the same confident cluster, while the entropy of the mean
   prediction keeps all clusters in use. Keep the head with the lowest loss (no labels needed).
3. Self-label: the confident predictions of the kept head become pseudo-labels for perturbed
   copies of the same samples.

The backbone stays frozen, so SCAN's image augmentations become perturbations of the feature
vector (Gaussian noise and dropout, then re-normalisation): this keeps the stage cheap enough to
rerun on every ``cluster.k`` change.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..losses import confident_self_label_loss, scan_loss
from ..models import cluster_head
from ..tables import UNLABELED

log = logging.getLogger(__name__)


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


def perturb(x: torch.Tensor, noise: float, dropout: float, generator: torch.Generator) -> torch.Tensor:
    """A random view of unit feature vectors: Gaussian noise of norm about ``noise``, feature dropout."""
    if noise:
        x = x + noise / x.shape[1] ** 0.5 * torch.randn(x.shape, generator=generator, device=x.device)
    if dropout:
        keep = torch.rand(x.shape, generator=generator, device=x.device) >= dropout
        x = x * keep
    return F.normalize(x, dim=1)


class MultiHead(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int, num_clusters: int, num_heads: int):
        super().__init__()
        self.heads = nn.ModuleList(cluster_head(in_dim, hidden_dim, num_clusters) for _ in range(num_heads))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [head(x) for head in self.heads]


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    return [order[i : i + batch_size] for i in range(0, n, batch_size) if n - i >= 2]


@torch.no_grad()
def predict(head: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    head.eval()
    return torch.cat([F.softmax(head(x[i : i + batch_size]), dim=1) for i in range(0, len(x), batch_size)])


def finetune_scan(vectors: np.ndarray, labels: np.ndarray, train: np.ndarray, num_clusters: int,
                  params, seed: int, device: torch.device, log_metric) -> tuple[np.ndarray, nn.Module, dict]:
    """Returns the cluster probabilities of every row of ``vectors``, the kept head and statistics."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_all = F.normalize(torch.as_tensor(np.array(vectors, dtype=np.float32)), dim=1)
    x = x_all[torch.from_numpy(np.flatnonzero(train))]
    neighbors = mine_neighbors(x, params.num_neighbors)
    stats = {"train_samples": len(x), "num_neighbors": int(neighbors.shape[1])}
    train_labels = labels[train]
    if (train_labels != UNLABELED).all():  # SCAN's diagnostic: how often mined neighbours share a class
        stats["neighbor_label_agreement"] = float((train_labels[neighbors.numpy()] == train_labels[:, None]).mean())

    model = MultiHead(x.shape[1], params.hidden_dim, num_clusters, params.num_heads).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    x, neighbors = x.to(device), neighbors.to(device)
    for epoch in range(params.epochs):
        model.train()
        totals = np.zeros(3)
        batches = _batches(len(x), params.batch_size, generator)
        for batch in batches:
            pick = torch.randint(neighbors.shape[1], (len(batch),), generator=generator)
            anchor = perturb(x[batch], params.feature_noise, 0.0, generator)
            neighbor = perturb(x[neighbors[batch.to(device), pick.to(device)]], params.feature_noise, 0.0, generator)
            losses = [scan_loss(a, n, params.entropy_weight)
                      for a, n in zip(model(anchor), model(neighbor))]
            loss = torch.stack([total for total, _, _ in losses]).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            totals += [np.mean([part.item() for part in parts]) for parts in zip(*losses)]
        totals /= len(batches)
        log_metric("scan/loss", totals[0])
        log_metric("scan/consistency", totals[1])
        log_metric("scan/entropy", totals[2], step_done=True)

    # Keep the head with the lowest SCAN loss on all training anchors and their neighbours.
    with torch.no_grad():
        model.eval()
        head_losses = [float(scan_loss(a, n, params.entropy_weight)[0])
                       for a, n in zip(model(x), model(x[neighbors[:, 0]]))]
    best = int(np.argmin(head_losses))
    head = model.heads[best]
    stats.update(head_losses=[round(h, 4) for h in head_losses], best_head=best)
    stats["scan_confident_fraction"] = float((predict(head, x).max(1).values > params.confidence_threshold)
                                             .float().mean())

    optimizer = torch.optim.Adam(head.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    for epoch in range(params.self_label_epochs):
        head.train()
        total, confident = 0.0, 0.0
        batches = _batches(len(x), params.batch_size, generator)
        for batch in batches:
            with torch.no_grad():
                clean = head(x[batch])
            strong = perturb(x[batch], 2 * params.feature_noise, 0.1, generator)
            loss, fraction = confident_self_label_loss(clean, head(strong), params.confidence_threshold)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, confident = total + loss.item(), confident + fraction
        log_metric("selflabel/loss", total / len(batches))
        log_metric("selflabel/confident_fraction", confident / len(batches), step_done=True)
    probs = predict(head, x_all.to(device)).cpu().numpy()
    stats["final_confident_fraction"] = float((probs[train].max(1) > params.confidence_threshold).mean())
    return probs, head, stats
