"""Losses that train cluster heads."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

EPS = 1e-8


def entropy_of_mean(probs: torch.Tensor) -> torch.Tensor:
    """Entropy of the mean cluster distribution of a batch: high when clusters are used evenly."""
    mean = probs.mean(0)
    return -(mean * (mean + EPS).log()).sum()


def ranked_prior(mean: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """``prior``'s sizes (K,) given to the clusters in the order of their ``mean`` sizes (..., K), the
    largest prior to the largest cluster: a prior on the sizes that does not say which cluster is which."""
    order = mean.detach().argsort(dim=-1, descending=True)
    largest_first = prior.sort(descending=True).values.expand_as(mean).contiguous()
    return torch.empty_like(mean).scatter_(-1, order, largest_first)


def size_penalty(probs: torch.Tensor, prior: torch.Tensor | None) -> torch.Tensor:
    """How far a batch's cluster sizes (its mean prediction) are from the expected ones: ``-H(mean)``
    with a uniform prior (``None``), the term SCAN (eq. 2) and TURTLE (eq. 12) subtract; otherwise
    ``KL(mean || ranked prior) - log K``, which is the same for the uniform prior and lets clusters
    of unequal expected size keep their sizes (as PET-TURTLE's power-law prior does)."""
    if prior is None:
        return -entropy_of_mean(probs)
    mean = probs.mean(0)
    log_ratio = (mean + EPS).log() - (ranked_prior(mean, prior) + EPS).log()
    return (mean * log_ratio).sum() - math.log(mean.shape[0])


def scan_loss(
    anchor_logits: torch.Tensor,
    neighbor_logits: torch.Tensor,
    entropy_weight: float,
    prior: torch.Tensor | None = None,
):
    """SCAN's clustering loss (Van Gansbeke et al. 2020, eq. 2).

    Consistency: ``-mean log <p(anchor), p(neighbor)>`` pulls a sample and one of its nearest
    neighbours into the same confident cluster; the entropy of the mean prediction, weighted by
    ``entropy_weight``, is subtracted so that not everything falls into one cluster (with a size
    ``prior``, ``size_penalty`` against it is added instead). Returns ``(total, consistency, entropy)``.
    """
    anchor = F.softmax(anchor_logits, dim=1)
    neighbor = F.softmax(neighbor_logits, dim=1)
    similarity = (anchor * neighbor).sum(1)
    consistency = -(similarity + EPS).log().mean()
    entropy = entropy_of_mean(anchor)
    return consistency + entropy_weight * size_penalty(anchor, prior), consistency, entropy


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


def beta_pmi(log_p1: torch.Tensor, log_p2: torch.Tensor, marginal: torch.Tensor, beta: float) -> torch.Tensor:
    """TEMI's beta-PMI (Adaloglou et al. 2023, "Exploring the limits of deep image clustering using
    pretrained models"): ``log sum_k (p1_k * p2_k) ** beta / marginal_k`` over the last axis.

    Takes log-probabilities and works in log space: ``(p1 * p2) ** beta`` has an infinite gradient
    where a probability underflows to 0 (beta < 1), which would turn the loss into NaN.
    """
    log_marginal = marginal.clamp_min(torch.finfo(marginal.dtype).tiny).log()  # a dead cluster's 0 stays finite
    return torch.logsumexp(beta * (log_p1 + log_p2) - log_marginal, dim=-1)


def temi_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    marginal: torch.Tensor,
    beta: float,
    student_temperature: float,
    teacher_temperature: float,
    prior: torch.Tensor | None = None,
):
    """TEMI's weighted PMI loss (Adaloglou et al. 2023, BMVC) for several heads at once.

    Logits are ``(heads, 2, batch, K)``: view 0 is a sample x, view 1 one of its nearest neighbours
    x'; ``marginal`` ``(heads, K)`` is the running estimate of the teacher's cluster marginal.
    With ``ps = softmax(student / student_temperature)`` and ``pt = softmax(teacher /
    teacher_temperature)`` (no gradient), the loss of a head is

        mean_x  w(x, x') * -(pmi(ps(x), pt(x')) + pmi(ps(x'), pt(x))) / 2,

    ``pmi`` being ``beta_pmi`` and ``w(x, x') = <pt(x), pt(x')>`` averaged over heads (one weight
    per pair, no gradient): pairs the teacher does not put together count less.
    Dividing by the marginal is what keeps clusters at equal sizes; with a size ``prior`` the marginal
    is divided by ``K`` times the ranked prior first, so that a cluster at its expected size counts
    as a balanced one does. Returns ``(loss per head, mean PMI per head, weight per pair)``;
    training minimises the sum of the per-head losses.
    """
    if prior is not None:
        marginal = marginal / (marginal.shape[-1] * ranked_prior(marginal, prior))
    log_ps = F.log_softmax(student_logits / student_temperature, dim=-1)
    log_pt = F.log_softmax(teacher_logits.detach() / teacher_temperature, dim=-1)
    pt = log_pt.exp()
    weight = (pt[:, 0] * pt[:, 1]).sum(-1).mean(0)
    marginal = marginal[:, None, :]  # the same for every pair
    pmi = (
        beta_pmi(log_ps[:, 0], log_pt[:, 1], marginal, beta) + beta_pmi(log_ps[:, 1], log_pt[:, 0], marginal, beta)
    ) / 2
    return -(weight * pmi).mean(-1), pmi.mean(-1), weight
