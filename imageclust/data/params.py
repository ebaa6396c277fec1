"""The ``data`` section of params.yaml: which dataset, where it is, and how it is prepared."""

from __future__ import annotations

import re
from typing import Literal, Optional

from pydantic import Field, field_validator

from ..config import Int, Section, one_of
from .prepared import DEFAULT_TRAIN_SPLITS
from .registry import DATASETS


class DataParams(Section):
    """``data``: the dataset every later stage reads, in the canonical prepared form."""

    key = "data"
    name: one_of(lambda: DATASETS, "dataset") = Field("digits", description="dataset source (`imageclust/data/`; "
                                                      "docs/datasets.md)")
    root: Optional[str] = Field(None, description="the folder, archive (path or URL), table or `.npz`; for "
                                "torchvision datasets their root (null: `data.download_dir`)")
    download_dir: str = Field("data/raw", description="where downloads are kept between runs and archives are "
                              "unpacked (temporarily)")
    splits: Optional[list[str]] = Field(None, min_length=1, description="splits to prepare; null: all the source has")
    train_splits: list[str] = Field(default_factory=lambda: list(DEFAULT_TRAIN_SPLITS), min_length=1, description="the prepared "
                                    "splits that pretrain, cluster and finetune fit on; every split is evaluated")
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="stratified, seeded held-out share for sources "
                                 "without their own splits")
    max_per_split: Optional[Int] = Field(None, ge=1, description="keep at most this many samples per split "
                                         "(stratified, seeded); null: all")
    image_size: Optional[Int] = Field(None, ge=4, le=4096, description="square side: shorter side scaled, centre "
                                      "cut; null keeps the native size where every image has the same of at most 256 px, "
                                      "else the median shorter side, at most 256")
    channels: Optional[Literal[1, 3]] = Field(None, description="null: 3 if any image is in colour, else 1")
    label_column: str = Field("label", description="the label column of `pixel_table`")
    max_image_pixels: Int = Field(89_478_485, ge=1, description="larger images are skipped as decompression bombs "
                                  "(Pillow's own limit)")
    checksum: Optional[str] = Field(
        None, description="`md5:` and 32 hex digits or `sha256:` and 64: what the archive that `data.root` names (a "
        "download or a local file) must hash to, as its source publishes it; a cached download that does not match "
        "is fetched again, a fresh one that does not is refused (the `deepcluster_folder` preset sets Imagenette's)")

    @field_validator("checksum")
    @classmethod
    def _checksum(cls, value):
        lengths = {"md5": 32, "sha256": 64}
        algorithm, _, digest = (value or "").partition(":")
        if value is not None and not (
            algorithm in lengths and re.fullmatch(f"[0-9a-fA-F]{{{lengths[algorithm]}}}", digest)
        ):
            raise ValueError("must be md5: and 32 hex digits, or sha256: and 64 hex digits")
        return value
