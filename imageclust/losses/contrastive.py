"""Contrastive losses for self-supervised pretraining."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float,
    z1_all: torch.Tensor | None = None,
    z2_all: torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et al. 2020, eq. 1).

    ``z1[i]`` and ``z2[i]`` are projections of two views of sample i. Each of the 2n views must
    pick its partner among the other 2n - 1 by cosine similarity / ``temperature``; the loss is
    the mean cross-entropy over all 2n views.

    Across processes, ``z1_all`` and ``z2_all`` hold every process's projections (N rows each) and
    ``z1``, ``z2`` are this process's rows ``offset .. offset + n`` of them: this process's views
    then pick their partners among all 2N - 1 others, and the mean of the processes' losses is the
    loss of one process holding the whole batch.
    """
    n = z1.shape[0]
    z1_all = z1 if z1_all is None else z1_all
    z2_all = z2 if z2_all is None else z2_all
    total = z1_all.shape[0]
    queries = F.normalize(torch.cat([z1, z2]), dim=1)
    gathered = z1_all is not z1 or z2_all is not z2
    keys = F.normalize(torch.cat([z1_all, z2_all]), dim=1) if gathered else queries
    logits = queries @ keys.t() / temperature
    rows = torch.arange(n, device=logits.device) + offset
    own = torch.cat([rows, rows + total])  # each view's own column: neither its positive nor a negative
    logits[torch.arange(2 * n, device=logits.device), own] = float("-inf")
    targets = torch.cat([rows + total, rows])
    return F.cross_entropy(logits, targets)


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo's InfoNCE (He et al. 2020, eq. 1): each query ``q[i]`` must pick its key ``k[i]`` among
    the queue's negatives by cosine similarity / ``temperature``. ``queue`` is (size, dim) of
    unit vectors; ``q`` and ``k`` are normalised here."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    positive = (q * k).sum(1, keepdim=True)
    negative = q @ queue.t()
    logits = torch.cat([positive, negative], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def supervised_contrastive(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon (Khosla et al. 2020, eq. 2, L_out) with pseudo-labels as the classes: each sample's
    positives are the other samples of its cluster in the batch; its loss is the mean over them of
    -log softmax of cosine similarity / ``temperature`` among all other samples. Samples alone in
    their cluster in the batch have no positive and are left out."""
    z = F.normalize(z, dim=1)
    logits = z @ z.t() / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~self_mask
    counts = positive.sum(1)
    has_positive = counts > 0
    if not has_positive.any():
        return z.sum() * 0.0
    mean_log_prob = log_prob.masked_fill(~positive, 0.0).sum(1)[has_positive] / counts[has_positive]
    return -mean_log_prob.mean()
