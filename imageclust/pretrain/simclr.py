"""SimCLR (Chen et al. 2020): two augmented views, an MLP projection, the NT-Xent loss."""

from __future__ import annotations

import torch
from torch import nn

from ..losses import nt_xent
from ..models import projection_head


class SimCLR(nn.Module):
    def __init__(self, backbone: nn.Module, params):
        super().__init__()
        self.backbone = backbone
        self.projector = projection_head(backbone.output_dim, backbone.output_dim, params.projection_dim)
        self.temperature = params.temperature

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """The loss on two views of one batch (forward, so that DDP synchronises its gradients)."""
        z = self.projector(self.backbone(torch.cat([view1, view2])))
        z1, z2 = z.chunk(2)
        return nt_xent(z1.float(), z2.float(), self.temperature)
