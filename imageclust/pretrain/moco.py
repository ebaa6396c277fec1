"""MoCo v2 (He et al. 2020, "Momentum Contrast"; Chen et al. 2020, "Improved Baselines"): a query
encoder trained by InfoNCE against a key encoder that follows it as an exponential moving average,
with negatives from a queue of past keys. Across processes, every process's keys enter the queue.

Batch normalisation: on CUDA, DDP runs use synchronised batch norm (as SimCLR does), so N
processes train as one holding the whole batch; MoCo's shuffled batch norm is not used. PyTorch
has no synchronised batch norm on the CPU: there each process normalises its own part.

``temperature_final`` anneals the temperature along a half cosine over training, as the replaced
MoCo Fashion-MNIST system does; null keeps it constant.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..config import Int, Section
from ..losses.contrastive import info_nce
from ..models.heads import projection_head
from ..runtime import gather
from .base import PretrainMethod


class Params(Section):
    temperature: float = Field(0.2, gt=0, description="InfoNCE temperature (MoCo v2's)")
    temperature_final: float | None = Field(
        None, gt=0, description="null: constant; else annealed along a half cosine to this by the end of training"
    )
    queue_size: Int = Field(8192, ge=1, description="negatives kept from past batches (of every process)")
    momentum: float = Field(
        0.999,
        ge=0,
        le=1,
        description="key encoder <- momentum x key encoder + (1 - momentum) x query encoder, each step",
    )


def annealed(start: float, end: float | None, progress: float) -> float:
    """``start`` at progress 0 to ``end`` at 1 along a half cosine; ``start`` throughout when ``end`` is None."""
    if end is None:
        return start
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


class MoCo(nn.Module):
    def __init__(self, backbone: nn.Module, params):
        super().__init__()
        p = params.moco
        self.backbone = backbone
        self.projector = projection_head(backbone.output_dim, params.projection_dims)
        self.key_backbone = copy.deepcopy(backbone)
        self.key_projector = copy.deepcopy(self.projector)
        for param in [*self.key_backbone.parameters(), *self.key_projector.parameters()]:
            param.requires_grad = False
        self.momentum, self.start, self.end = p.momentum, p.temperature, p.temperature_final
        self.temperature = p.temperature
        self.register_buffer("queue", F.normalize(torch.randn(p.queue_size, params.projection_dims[-1]), dim=1))
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))

    def set_progress(self, progress: float) -> None:
        """Called by the loop before each step with the fraction of training done."""
        self.temperature = annealed(self.start, self.end, progress)

    @torch.no_grad()
    def momentum_update(self) -> None:
        """key <- m key + (1 - m) query, parameter by parameter (eq. 2); buffers (BN statistics) are the key's own."""
        query = [*self.backbone.parameters(), *self.projector.parameters()]
        key = [*self.key_backbone.parameters(), *self.key_projector.parameters()]
        torch._foreach_mul_(key, self.momentum)
        torch._foreach_add_(key, query, alpha=1.0 - self.momentum)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Overwrite the oldest entries with ``keys``, wrapping around the end of the queue."""
        size = len(self.queue)
        keys = keys[-size:]
        slots = (self.queue_pointer + torch.arange(len(keys), device=keys.device)) % size
        self.queue[slots] = keys.to(self.queue.dtype)
        self.queue_pointer.copy_((self.queue_pointer + len(keys)) % size)

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        q = self.projector(self.backbone(view1)).float()
        with torch.no_grad():
            self.momentum_update()
            k = F.normalize(self.key_projector(self.key_backbone(view2)).float(), dim=1)
        loss = info_nce(q, k, self.queue.clone(), self.temperature)
        self.enqueue(gather(k))
        return loss


METHOD = PretrainMethod("moco", MoCo, Params)
