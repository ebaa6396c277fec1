"""Backbones (registry by name) and the heads built on them."""

from .backbones import BACKBONES, build_backbone
from .heads import MultiHead, cluster_head, projection_head

__all__ = ["BACKBONES", "build_backbone", "cluster_head", "projection_head"]
