"""TURTLE's objectives (Gadetsky, Jiang, Brbic: "Let Go of Your Labels with Unsupervised
Transfer", ICML 2024). A task encoder labels the data (eq. 9: the mean of one linear head's
softmax per representation space); linear classifiers fitted to those labels in each space should
reproduce them (the inner problem, eq. 10); the task encoder is trained so that they do, with an
entropy term that keeps every cluster in use (eq. 12), through the first-order hypergradient of
eq. 13: the inner classifiers' predictions are constants for the outer step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .clustering import size_penalty


def task_labels(space_logits: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Eq. 9: the labelling is the mean over spaces of each head's softmax. Returns it (n, K) and the
    per-space softmaxes."""
    per_space = [F.softmax(logits, dim=1) for logits in space_logits]
    return torch.stack(per_space).mean(0), per_space


def turtle_inner_loss(inner_logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Eq. 10: the cross-entropy of each space's linear classifier against the task encoder's
    (fixed) soft labels, summed over spaces."""
    target = labels.detach()
    return sum(F.cross_entropy(logits, target) for logits in inner_logits)


def turtle_outer_loss(
    inner_logits: list[torch.Tensor],
    labels: torch.Tensor,
    per_space: list[torch.Tensor],
    gamma: float,
    prior: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 12 with eq. 13's first-order hypergradient: the fitted classifiers' cross-entropy against the
    task encoder's labels (their predictions held fixed) minus ``gamma`` times the entropy of each
    space's mean label distribution (summed over spaces); with a size ``prior``, plus ``gamma`` times
    each space's ``size_penalty`` against it instead (the same for a uniform prior).
    Returns ``(loss, prediction error, entropy)``."""
    error = sum(F.cross_entropy(logits.detach(), labels) for logits in inner_logits)
    entropy = sum(torch.special.entr(probs.mean(0)).sum() for probs in per_space)
    if prior is None:
        return error - gamma * entropy, error, entropy
    return error + gamma * sum(size_penalty(probs, prior) for probs in per_space), error, entropy
