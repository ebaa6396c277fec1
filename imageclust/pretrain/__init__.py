"""Self-supervised pretraining methods by name, and the training loop they share.

A method is an ``nn.Module`` built as ``Method(backbone, params)`` with a ``backbone`` attribute
whose ``forward(view1, view2)`` returns the loss.
"""

from .simclr import SimCLR

METHODS = {
    "simclr": SimCLR,
}

__all__ = ["METHODS"]
