"""Datasets that torchvision downloads and parses: MNIST and friends, CIFAR, STL-10, SVHN, GTSRB.

Each is built through torchvision's own class with ``download=True`` under ``data.root`` (or
``data.download_dir``), so the files, checksums and mirrors are torchvision's. Only the splits in
``data.splits`` are loaded when it is set: STL-10's unlabeled split alone is 100,000 images (2.8 GB).
Pixels stay in torchvision's arrays; ``read(i)`` returns one sample as (h, w) or (h, w, c) uint8.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import numpy as np

from ..errors import DataError, ParamsError
from ..tables import UNLABELED
from .images import open_image
from .source import Source, concatenated_reader

DIGITS = [str(d) for d in range(10)]
TRAIN_TEST = {"train": {"train": True}, "test": {"train": False}}


def _by_name(*splits: str) -> dict[str, dict]:
    return {s: {"split": s} for s in splits}


@dataclass(frozen=True)
class Spec:
    cls: str  # class name in torchvision.datasets
    splits: dict[str, dict]  # our split name -> constructor keyword arguments
    channels_first: bool = False  # .data is (n, 3, h, w) rather than (n, h, w[, 3])
    classes: Optional[list[str]] = None  # when the dataset has no .classes
    # Replaces labels and class names: (dataset, root, split) -> (labels, classes).
    relabel: Optional[Callable] = None
    files: bool = False  # samples are image files (GTSRB's ``_samples``), not an array


def _cifar100_coarse(dataset, root: Path, split: str):
    """CIFAR-100's 20 superclasses, which torchvision does not expose but leaves in its pickles."""
    folder = root / dataset.base_folder
    try:
        with open(folder / split, "rb") as f:
            labels = pickle.load(f, encoding="latin1")["coarse_labels"]
        with open(folder / "meta", "rb") as f:
            classes = pickle.load(f, encoding="latin1")["coarse_label_names"]
    except (OSError, KeyError, pickle.UnpicklingError, EOFError) as exc:
        raise DataError(f"cifar100_20: cannot read coarse labels from {folder}: {exc!r}") from None
    return np.asarray(labels), list(classes)


SPECS: dict[str, Spec] = {
    "mnist": Spec("MNIST", TRAIN_TEST),
    "fashion_mnist": Spec("FashionMNIST", TRAIN_TEST),
    "kmnist": Spec("KMNIST", TRAIN_TEST),
    "usps": Spec("USPS", TRAIN_TEST, classes=DIGITS),
    "cifar10": Spec("CIFAR10", TRAIN_TEST),
    "cifar100": Spec("CIFAR100", TRAIN_TEST),
    "cifar100_20": Spec("CIFAR100", TRAIN_TEST, relabel=_cifar100_coarse),
    "stl10": Spec("STL10", _by_name("train", "test", "unlabeled"), channels_first=True),
    "svhn": Spec("SVHN", _by_name("train", "test", "extra"), channels_first=True, classes=DIGITS),
    "gtsrb": Spec("GTSRB", _by_name("train", "test"), classes=[str(c) for c in range(43)], files=True),
}


def _construct(name: str, spec: Spec, root: Path, kwargs: dict):
    import torchvision.datasets  # lazily: importing torch costs seconds that other datasets need not pay

    try:
        return getattr(torchvision.datasets, spec.cls)(str(root), download=True, **kwargs)
    except (RuntimeError, OSError, ValueError) as exc:  # URLError is an OSError
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__  # one line, whatever torchvision wrote
        raise DataError(f"{name}: cannot download to {root} (no network?): {reason}") from None


class Part(NamedTuple):
    labels: np.ndarray
    classes: list
    read: Callable[[int], object]  # local index -> sample
    size: Optional[np.ndarray]  # native (h, w) of every sample, None when unknown
    color: Optional[bool]


def _split_part(name: str, spec: Spec, root: Path, split: str, max_pixels: int) -> Part:
    dataset = _construct(name, spec, root, spec.splits[split])
    if spec.files:  # GTSRB: files of varying size, opened one at a time as prepare reads them
        paths = [path for path, _ in dataset._samples]
        labels = np.asarray([label for _, label in dataset._samples], dtype=np.int64)
        return Part(labels, spec.classes, lambda i: open_image(paths[i], max_pixels), None, None)
    pixels = np.asarray(dataset.data)  # a torch tensor for the MNIST family: a view, not a copy
    if pixels.ndim == 3:
        pixels = pixels[..., None]  # (h, w, 1) is canonical already, so prepare copies it as is
    elif spec.channels_first:
        pixels = pixels.transpose(0, 2, 3, 1)  # a view; each sample is made contiguous when read
    labels = np.asarray(dataset.targets if hasattr(dataset, "targets") else dataset.labels)
    classes = list(getattr(dataset, "classes", None) or spec.classes or DIGITS)
    if spec.relabel is not None:
        labels, classes = spec.relabel(dataset, root, split)
    if len(labels) != len(pixels) or pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[3] not in (1, 3):
        raise DataError(f"{name}: unexpected {split} data from torchvision: {pixels.dtype} {pixels.shape}, "
                        f"{len(labels)} labels")
    return Part(labels, classes, lambda i: np.ascontiguousarray(pixels[i]), np.array(pixels.shape[1:3]),
                pixels.shape[3] == 3)


def _loader(name: str, spec: Spec) -> Callable[..., Source]:
    def load(params, seed: int) -> Source:
        root = Path(params.root or params.download_dir)
        wanted = list(dict.fromkeys(params.splits or spec.splits))
        if any(s not in spec.splits for s in wanted):
            raise ParamsError(f"params: data.splits={params.splits} is invalid: {name} has splits {list(spec.splits)}")
        parts = [_split_part(name, spec, root, s, params.max_image_pixels) for s in wanted]
        counts = [len(p.labels) for p in parts]
        labels = np.concatenate([p.labels for p in parts]).astype(np.int64)
        known = all(p.size is not None for p in parts)
        return Source(
            name=name,
            classes=[str(c) for c in parts[0].classes],
            ids=np.asarray([f"{name}-{s}-{i:05d}" for s, n in zip(wanted, counts) for i in range(n)], dtype=object),
            splits=np.repeat(np.asarray(wanted, dtype=object), counts),
            labels=np.where(labels < 0, UNLABELED, labels),  # STL-10 marks its unlabeled split with -1
            read=concatenated_reader([p.read for p in parts], counts),
            sizes=np.concatenate([np.tile(p.size, (n, 1)) for p, n in zip(parts, counts)]) if known else None,
            color=np.repeat([p.color for p in parts], counts) if known else None,
            default_size=32 if spec.files else None,  # GTSRB's images range from 15x15 to 250x250
        )

    return load


LOADERS: dict[str, Callable[..., Source]] = {name: _loader(name, spec) for name, spec in SPECS.items()}
