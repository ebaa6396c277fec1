"""A loss that pulls embeddings towards the centre of their (pseudo-)cluster."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def prototype_loss(
    embeddings: torch.Tensor, centres: torch.Tensor, targets: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Prototype (centroid) cross-entropy: ``cross_entropy(z @ C^T / temperature, target)``.

    ``z`` are the L2-normalised ``embeddings`` (batch, d), ``C`` the L2-normalised cluster ``centres``
    (k, d) and ``targets`` (batch,) each row's pseudo-cluster. The cosine similarity to every centre is
    a logit, so the loss pulls an embedding towards its own centre and pushes it away from the others:
    it tightens and separates the clusters. This is the prototype form of the InfoNCE loss, as PCL's
    ProtoNCE (Li et al. 2021, "Prototypical Contrastive Learning of Unsupervised Representations")
    with one temperature for every prototype, and the loss of the MoCo system's spectral fine-tuning,
    whose centres are the means of spectral-clustering pseudo-clusters. Both inputs are normalised
    here (a no-op when they already are) so that the temperature alone sets the logits' scale.
    """
    z = F.normalize(embeddings, dim=1)
    c = F.normalize(centres, dim=1)
    return F.cross_entropy(z @ c.t() / temperature, targets)
