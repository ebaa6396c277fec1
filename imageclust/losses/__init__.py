"""Losses as small pure functions, each citing the paper it comes from."""

from .clustering import confident_self_label_loss, entropy_of_mean, scan_loss
from .contrastive import info_nce, nt_xent

__all__ = ["confident_self_label_loss", "entropy_of_mean", "info_nce", "nt_xent", "scan_loss"]
