"""The ``finetune`` section of params.yaml: the keys every method shares and one block per
registered method (``finetune.scan``, ``finetune.temi``, ...)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..config import Int, Section, one_of, with_blocks
from ..errors import ParamsError
from ..models.encoder import EXTRACTOR
from .registry import METHODS


class FinetuneShared(Section):
    """``finetune``: a deep clustering method that improves on the cluster stage's assignments."""

    key = "finetune"
    method: one_of(lambda: METHODS, "finetune method") = Field(
        "auto",
        description=(
            "fine-tuning method (`imageclust/finetune/`); `auto`: `finetune.auto.candidates` fitted on the same "
            "features, the one judged best without labels kept; `none`: the cluster stage's assignments are final"
        ),
    )
    batch_size: Int = Field(256, ge=2, description="batch of every method")
    checkpoint_every: Int = Field(
        5, ge=1, description="epochs between checkpoints (and after the last); a killed run resumes from the last one"
    )
    floor: bool = Field(
        True,
        description=(
            "SCAN, TEMI, TURTLE: return the cluster stage's assignment when the method's clustering is judged worse "
            "in the extract stage's features, and for TURTLE in every space of extract.spaces too "
            "(the chance-corrected nearest-neighbour score, as `auto` judges)"
        ),
    )

    size_prior: Literal["auto", "uniform", "clusters", "long_tail"] = Field(
        "auto",
        description=(
            "SCAN, TEMI, TURTLE: the cluster sizes their size terms expect: `uniform` (as published), `clusters` "
            "(the cluster stage's sizes), `auto` (`clusters` when those are unequal), `long_tail` (sizes falling "
            "geometrically by finetune.imbalance_ratio, for a user who knows it)"
        ),
    )
    imbalance_ratio: float = Field(
        10.0,
        ge=1.0,
        description="size_prior long_tail: the largest class's size over the smallest's (1: uniform)",
    )

    @property
    def block(self):
        """The chosen method's own block."""
        return getattr(self, self.method)

    @property
    def trains_encoder(self) -> bool:
        """Whether the chosen method trains the encoder on the images (and so needs both)."""
        return METHODS[self.method].trains_encoder(self.block)


FinetuneParams = with_blocks("FinetuneParams", FinetuneShared, METHODS, "the knobs of")


def check_backbone(params: FinetuneShared, extract_backbone: str) -> None:
    """A method that trains the encoder needs the features to come from that encoder."""
    if params.trains_encoder and extract_backbone != EXTRACTOR:
        raise ParamsError(
            f"params: finetune.method={params.method!r} is invalid with extract.backbone="
            f"{extract_backbone}: it trains the encoder of the pretrain stage; set extract.backbone="
            f"{EXTRACTOR} (pretrain.method=none starts it from random weights)"
        )
