"""Every pretraining method by name (``pretrain.method``): a new method is one module (its module
class, ``Params`` and ``METHOD``) plus one entry here. ``none`` trains nothing."""

from __future__ import annotations

from . import moco, simclr
from .base import PretrainMethod

NO_PRETRAINING = PretrainMethod("none", build=None)

METHODS: dict[str, PretrainMethod] = {
    method.name: method
    for method in (
        simclr.METHOD,
        moco.METHOD,
        NO_PRETRAINING,
    )
}
