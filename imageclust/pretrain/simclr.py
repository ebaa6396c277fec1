"""SimCLR (Chen et al. 2020): two augmented views, an MLP projection, the NT-Xent loss. Across
processes the negatives are every process's views, as in the paper (its batch of 4096 spans many
devices), so N processes train as one process holding the whole batch."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from ..config import Section
from ..losses.contrastive import nt_xent
from ..models.heads import projection_head
from ..runtime import gather_with_grad, rank
from .base import PretrainMethod


class Params(Section):
    temperature: float = Field(0.5, gt=0, description="NT-Xent temperature")


class SimCLR(nn.Module):
    def __init__(self, backbone: nn.Module, params):
        super().__init__()
        self.backbone = backbone
        self.projector = projection_head(backbone.output_dim, params.projection_dims)
        self.temperature = params.simclr.temperature

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """The loss on two views of one batch (forward, so that DDP synchronises its gradients)."""
        z = self.projector(self.backbone(torch.cat([view1, view2]))).float()
        z1, z2 = z.chunk(2)
        z1_all, z2_all = gather_with_grad(z1), gather_with_grad(z2)
        return nt_xent(z1, z2, self.temperature, z1_all, z2_all, offset=rank() * len(z1))


METHOD = PretrainMethod("simclr", SimCLR, Params)
