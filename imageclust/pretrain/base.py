"""What a pretraining method is: an ``nn.Module`` built as ``build(backbone, params)`` with a
``backbone`` attribute, whose ``forward(view1, view2)`` returns the loss; it may define
``set_progress(fraction)`` for schedules of its own (MoCo's temperature)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..config import NoParams, Section


@dataclass(frozen=True)
class PretrainMethod:
    name: str
    build: Callable[[nn.Module, Section], nn.Module] | None  # (backbone, pretrain params); None trains nothing
    params: type[Section] = NoParams
