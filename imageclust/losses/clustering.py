"""Losses that train cluster heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-8


def entropy_of_mean(probs: torch.Tensor) -> torch.Tensor:
    """Entropy of the mean cluster distribution of a batch: high when clusters are used evenly."""
    mean = probs.mean(0)
    return -(mean * (mean + EPS).log()).sum()


def scan_loss(anchor_logits: torch.Tensor, neighbor_logits: torch.Tensor, entropy_weight: float):
    """SCAN's clustering loss (Van Gansbeke et al. 2020, eq. 2).

    Consistency: ``-mean log <p(anchor), p(neighbor)>`` pulls a sample and one of its nearest
    neighbours into the same confident cluster; the entropy of the mean prediction, weighted by
    ``entropy_weight``, is subtracted so that not everything falls into one cluster.
    Returns ``(total, consistency, entropy)``.
    """
    anchor = F.softmax(anchor_logits, dim=1)
    neighbor = F.softmax(neighbor_logits, dim=1)
    similarity = (anchor * neighbor).sum(1)
    consistency = -(similarity + EPS).log().mean()
    entropy = entropy_of_mean(anchor)
    return consistency - entropy_weight * entropy, consistency, entropy


def confident_self_label_loss(clean_logits: torch.Tensor, augmented_logits: torch.Tensor, threshold: float):
    """SCAN's self-labelling step (Van Gansbeke et al. 2020, section 2.3).

    Samples whose clean prediction is more confident than ``threshold`` become pseudo-labels for
    their augmented view; the cross-entropy is weighted inversely to each pseudo-class's frequency
    so that large clusters do not swallow small ones. Returns ``(loss, fraction confident)``.
    """
    probs = F.softmax(clean_logits.detach(), dim=1)
    confidence, target = probs.max(1)
    mask = confidence > threshold
    if not mask.any():
        return augmented_logits.sum() * 0.0, 0.0
    target = target[mask]
    counts = torch.bincount(target, minlength=clean_logits.shape[1]).float()
    weight = torch.where(counts > 0, counts.sum() / (counts * (counts > 0).sum()), torch.zeros_like(counts))
    loss = F.cross_entropy(augmented_logits[mask], target, weight=weight)
    return loss, mask.float().mean().item()
