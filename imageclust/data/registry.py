"""Every dataset source by name (``data.name``): a new source is one module with
``load(params, seed) -> Source`` (``source.py``) plus one entry here."""

from __future__ import annotations

from typing import Callable

from . import arrays, digits, folder, table, tiny_imagenet, torchvision_sets
from .source import Source

DATASETS: dict[str, Callable[..., Source]] = {
    "digits": digits.load,
    "pixel_table": table.load,
    "arrays": arrays.load,
    # mnist, fashion_mnist, kmnist, usps, cifar10, cifar100, cifar100_20, stl10, svhn, gtsrb
    **torchvision_sets.LOADERS,
    "tiny_imagenet": tiny_imagenet.load,
    "image_folder": folder.load,
}
