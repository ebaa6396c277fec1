"""Losses as small pure functions, each citing the paper it comes from."""

from .clustering import beta_pmi, confident_self_label_loss, entropy_of_mean, scan_loss, temi_loss
from .contrastive import info_nce, nt_xent, supervised_contrastive
from .prototypes import prototype_loss

__all__ = [
    "beta_pmi", "confident_self_label_loss", "entropy_of_mean", "info_nce", "nt_xent", "prototype_loss", "scan_loss",
    "supervised_contrastive", "temi_loss",
]
