"""Tiny-ImageNet: 200 ImageNet classes as 64x64 JPEGs; train (500 a class), val (50 a class), test (unlabeled).

Layout under ``tiny-imagenet-200/``: ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG`` labelled
by ``val/val_annotations.txt`` (file, wnid, bbox, tab-separated), ``test/images/*.JPEG``,
``wnids.txt`` (the 200 classes) and ``words.txt`` (wnid, human-readable names). Downloaded and
extracted into ``data.root`` (or ``data.download_dir``) when absent. Files are decoded lazily.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError, ParamsError
from ..tables import UNLABELED
from .images import open_image
from .source import Source

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"  # the zip's published md5: a truncated or altered copy is fetched again
FOLDER = "tiny-imagenet-200"
SPLITS = ("train", "val", "test")
SIZE = 64


def _find_or_download(root: Path) -> Path:
    for base in (root / FOLDER, root):
        if (base / "wnids.txt").is_file():
            return base
    from torchvision.datasets import utils  # lazily: importing torch costs seconds

    try:
        utils.download_and_extract_archive(URL, download_root=str(root), md5=MD5)
    except Exception as exc:  # URLError, HTTP errors, a bad zip, a full disk: all mean "not available"
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise DataError(f"tiny_imagenet: cannot download to {root} (no network?): {reason}") from None
    if not (root / FOLDER / "wnids.txt").is_file():
        raise DataError(f"tiny_imagenet: {URL} did not unpack to {root / FOLDER}/wnids.txt")
    return root / FOLDER


def _class_names(base: Path, wnids: list[str]) -> list[str]:
    """The first of each wnid's names in words.txt ("goldfish, Carassius auratus" -> "goldfish")."""
    words = {}
    if (base / "words.txt").is_file():
        for line in (base / "words.txt").read_text(encoding="utf-8").splitlines():
            wnid, _, names = line.partition("\t")
            words[wnid] = names.split(",")[0].strip()
    return [words.get(w) or w for w in wnids]


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpeg", ".jpg")) if folder.is_dir() else []


def _val_labels(base: Path, paths: list[Path], index: dict[str, int]) -> list[int]:
    annotations = base / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise DataError(f"tiny_imagenet: {annotations} not found")
    wnid_of = {}
    for number, line in enumerate(annotations.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            if line.strip():
                raise DataError(f"tiny_imagenet: {annotations}:{number}: expected 'file<TAB>wnid<TAB>...' "
                                f"with a wnid from wnids.txt, got {line[:80]!r}")
            continue
        wnid_of[fields[0]] = fields[1]
    return [index[wnid_of[p.name]] if p.name in wnid_of else UNLABELED for p in paths]


def load(params, seed: int) -> Source:
    base = _find_or_download(Path(params.root or params.download_dir))
    wanted = list(dict.fromkeys(params.splits or SPLITS))
    if any(s not in SPLITS for s in wanted):
        raise ParamsError(f"params: data.splits={params.splits} is invalid: tiny_imagenet has splits {list(SPLITS)}")
    # Sorted like torchvision's ImageFolder would order train/, not in wnids.txt's order.
    wnids = sorted(w for w in (base / "wnids.txt").read_text().split() if w)
    index = {w: i for i, w in enumerate(wnids)}
    paths, labels, splits = [], [], []
    for split in wanted:
        if split == "train":
            found = [(p, index[w]) for w in wnids for p in _images(base / "train" / w / "images")]
        else:
            images = _images(base / split / "images")
            found = list(zip(images, _val_labels(base, images, index) if split == "val" else [UNLABELED] * len(images)))
        paths += [p for p, _ in found]
        labels += [label for _, label in found]
        splits += [split] * len(found)
    if not paths:
        raise DataError(f"tiny_imagenet: no JPEG images for splits {wanted} under {base}")
    return Source(
        name="tiny_imagenet",
        classes=_class_names(base, wnids),
        ids=np.asarray([f"tiny_imagenet-{s}-{p.stem}" for s, p in zip(splits, paths)], dtype=object),
        splits=np.asarray(splits, dtype=object),
        labels=np.asarray(labels, dtype=np.int64),
        read=lambda i: open_image(paths[i], params.max_image_pixels),
        # All files are 64x64, but sizes=None (so prepare resizes to default_size, a no-op at 64x64)
        # keeps a stray file of another size from breaking the run instead of being resized.
        sizes=None,
        color=None,  # some train JPEGs are grayscale; knowing which means opening 100k files
        default_size=SIZE,
    )
