"""What the methods that train the encoder share: the prepared images in batches on the device,
the encoder from the pretrain stage and embedding every image with it."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.prepared import load_prepared
from ..models.encoder import encoder_header, load_encoder
from ..runtime import to_float_images


class Images:
    """The prepared pixels of the feature rows: ``batch(rows)`` gives float images in [0, 1] on the
    device, at the side the encoder trained at (``pretrain.image_size``)."""

    def __init__(self, run):
        self.pixels = load_prepared(run.prepared_dir).images  # memory-mapped
        self.row_images = run.row_images
        self.device = run.device
        self.side = encoder_header(run.encoder_path).get("input_side")

    def batch(self, rows) -> torch.Tensor:
        rows = np.asarray(rows.cpu() if isinstance(rows, torch.Tensor) else rows)
        return to_float_images(self.pixels[self.row_images[rows]], self.device, self.side)


def trainable_encoder(run) -> nn.Module:
    """The pretrain stage's encoder (or its random initialisation, with ``pretrain.method: none``), in
    training mode on the device."""
    model, _ = load_encoder(run.encoder_path)
    return model.to(run.device).train()


@torch.no_grad()
def embed(model: nn.Module, images: Images, rows: np.ndarray, batch_size: int, normalize: bool = True) -> np.ndarray:
    """Features of the images of ``rows``, in evaluation mode (batch norm's running statistics)."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(rows), batch_size):
        z = model(images.batch(rows[start : start + batch_size])).float()
        out.append((F.normalize(z, dim=1) if normalize else z).cpu())
    model.train(was_training)
    return torch.cat(out).numpy()
