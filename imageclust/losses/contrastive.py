"""Contrastive losses for self-supervised pretraining."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et al. 2020, eq. 1).

    ``z1[i]`` and ``z2[i]`` are projections of two views of sample i. Each of the 2n views must
    pick its partner among the other 2n - 1 by cosine similarity / ``temperature``; the loss is
    the mean cross-entropy over all 2n views.
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.t() / temperature
    logits.fill_diagonal_(float("-inf"))  # a view is not its own positive nor a negative
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, targets)
