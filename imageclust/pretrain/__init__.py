"""Self-supervised pretraining methods by name, and the training loop they share.

A method is an ``nn.Module`` built as ``Method(backbone, params)`` with a ``backbone`` attribute
whose ``forward(view1, view2)`` returns the loss; it may define ``set_progress(fraction)`` for
schedules of its own (MoCo's temperature). ``pretrain.method: none`` trains nothing.
"""

from .moco import MoCo
from .simclr import SimCLR

METHODS = {
    "simclr": SimCLR,
    "moco": MoCo,
}
NO_PRETRAINING = "none"

__all__ = ["METHODS", "NO_PRETRAINING"]
