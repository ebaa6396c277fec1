"""``image_folder``: a folder of image files, or an archive or URL of one (see ``archives.py``).

Layouts, decided per folder:
    root/<split>/<class>/**/image   split folders (train, test, val, valid, validation, unlabeled)
    root/<class>/**/image           no split folders: a seeded, stratified train/test split
    root/**/image                   no class folder holds an image: unlabelled
A folder holding a single folder and nothing else (an archive's top folder) is descended into.
A split named ``unlabeled`` is always unlabelled, whatever its subfolders.

Listing reads each file's header once (size, colour) and never its pixels, so a million files cost
only their paths and sizes in memory; ``read(i)`` opens the file afresh when the sample is written.
"""

from __future__ import annotations

import logging
import os
import time
from array import array
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import DataError, ParamsError
from ..tables import UNLABELED
from .archives import resolve_root
from .images import SkipSample, is_color, is_image_file, open_image
from .source import Source, log_skip, stratified_split

log = logging.getLogger(__name__)

NAME = "image_folder"
SPLIT_FOLDERS = {"train": "train", "test": "test", "val": "val", "valid": "valid", "validation": "validation",
                 "unlabeled": "unlabeled", "unlabelled": "unlabeled"}
IGNORED = frozenset({"__MACOSX"})  # resource forks that macOS adds to zip files


def load(params, seed: int) -> Source:
    if params.root is None:
        raise ParamsError(f"params: data.root=None is invalid: {NAME} needs a folder, an archive or a URL")
    skipped: Counter = Counter()
    folder, cleanup = resolve_root(params.root, params.download_dir, skipped, params.checksum)
    try:  # prepare() cleans up once it holds the source; until then, it is ours to do
        return _load(params, seed, folder, skipped, cleanup)
    except BaseException:
        cleanup()
        raise


def _load(params, seed: int, folder: Path, skipped: Counter, cleanup) -> Source:
    started = time.perf_counter()
    top, dirs, files = _descend(folder, skipped)
    listing = _Listing(top, params.max_image_pixels, skipped)
    split_dirs = [d for d in dirs if d.name in SPLIT_FOLDERS]
    if split_dirs:
        for entry in [d for d in dirs if d.name not in SPLIT_FOLDERS] + files:
            reason = "not an image file" if entry.is_file() and not is_image_file(Path(entry.name)) \
                else "outside a split folder"
            log_skip(entry.name, reason, skipped)
        for entry in split_dirs:
            listing.add_split(Path(entry.path), entry.name, SPLIT_FOLDERS[entry.name])
    else:
        listing.add_split(top, "", "train", dirs, files)
    if not listing.ids:
        raise DataError(f"data.root={params.root}: no usable images found (skipped: {dict(skipped)})")

    classes = sorted({c for c in listing.class_names if c is not None})
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([UNLABELED if c is None else index[c] for c in listing.class_names], dtype=np.int64)
    splits = np.asarray(listing.splits, dtype=object)
    if not split_dirs:
        splits = stratified_split(labels, params.test_fraction, seed)
    ids = np.asarray(listing.ids, dtype=object)
    max_pixels = params.max_image_pixels
    log.info("%s: listed %d images (%d classes) in %.1fs", NAME, len(ids), len(classes),
             time.perf_counter() - started)
    return Source(
        name=NAME, classes=classes, ids=ids, splits=splits, labels=labels,
        read=lambda i: open_image(top / ids[i], max_pixels),  # opened afresh: no file stays open
        sizes=np.frombuffer(listing.sizes, dtype=np.int32).reshape(-1, 2).astype(np.int64),
        color=np.frombuffer(bytes(listing.color), dtype=bool).copy(),
        skipped=skipped, notes=listing.notes, cleanup=cleanup,
    )


class _Listing:
    """The usable samples found so far, as flat lists: a million files stay a few hundred MB at most."""

    def __init__(self, top: Path, max_pixels: int, skipped: Counter):
        self.top, self.max_pixels, self.skipped = top, max_pixels, skipped
        self.ids: list[str] = []
        self.splits: list[str] = []
        self.class_names: list[str | None] = []
        self.sizes = array("i")  # height, width, height, width, ...
        self.color = bytearray()
        self.notes: list[str] = []

    def add_split(self, folder: Path, rel: str, split: str, dirs=None, files=None) -> None:
        if dirs is None:
            dirs, files = _scan(folder, rel, self.skipped)
        if split == "unlabeled":  # subfolders of unlabelled data are not classes
            self._add_images(self._walk(folder, rel, dirs, files), split, None)
            return
        per_class = {d.name: self._walk(Path(d.path), _join(rel, d.name)) for d in dirs}
        if not any(per_class.values()):  # no class folder: unlabelled
            self._add_images(self._walk(folder, rel, [], files), split, None)
            return
        for entry in files:  # labelled: a file beside the class folders has no class
            reason = "outside a class folder" if is_image_file(Path(entry.name)) else "not an image file"
            log_skip(_join(rel, entry.name), reason, self.skipped)
        for name, images in per_class.items():
            if not images:  # dropped from the classes unless another split has images of it
                self.notes.append(f"empty class folder: {_join(rel, name)}")
                self.skipped["empty class folder"] += 1
            self._add_images(images, split, name)

    def _add_images(self, images: list[tuple[str, int, int, bool]], split: str, class_name: str | None) -> None:
        for rel, height, width, color in images:
            self.ids.append(rel)
            self.splits.append(split)
            self.class_names.append(class_name)
            self.sizes.extend((height, width))
            self.color.append(color)

    def _walk(self, folder: Path, rel: str, dirs=None, files=None) -> list[tuple[str, int, int, bool]]:
        """(relative path, height, width, colour) of every readable image below ``folder``, in a stable order."""
        found = []
        stack = [(folder, rel, dirs, files)]
        seen = set()
        while stack:
            path, prefix, dirs, files = stack.pop()
            info = os.stat(path)
            if (info.st_dev, info.st_ino) in seen:  # symlinked folders that loop
                log_skip(prefix, "folder seen twice (symlink loop)", self.skipped)
                continue
            seen.add((info.st_dev, info.st_ino))
            if dirs is None:
                dirs, files = _scan(path, prefix, self.skipped)
            for entry in files:
                image = self._header(entry, _join(prefix, entry.name))
                if image is not None:
                    found.append(image)
            stack.extend((Path(d.path), _join(prefix, d.name), None, None) for d in reversed(dirs))
        return found

    def _header(self, entry: os.DirEntry, rel: str) -> tuple[str, int, int, bool] | None:
        if not is_image_file(Path(entry.name)):
            log_skip(rel, "not an image file", self.skipped)
            return None
        try:
            with open_image(entry.path, self.max_pixels) as image:
                return rel, image.height, image.width, is_color(image)
        except SkipSample as skip:
            log_skip(rel, str(skip), self.skipped)
        except (ValueError, EOFError):  # a header Pillow half-understands
            log_skip(rel, "unreadable", self.skipped)
        return None


def _descend(folder: Path, skipped: Counter):
    """The dataset's top folder and its visible subfolders and files: a folder holding a single
    non-split folder and nothing else is only a wrapper (an archive's top folder)."""
    dirs, files = _scan(folder, "", skipped)
    while len(dirs) == 1 and not files and dirs[0].name not in SPLIT_FOLDERS:
        folder = Path(dirs[0].path)
        dirs, files = _scan(folder, "", skipped)
    return folder, dirs, files


def _scan(folder: Path, rel: str, skipped: Counter) -> tuple[list[os.DirEntry], list[os.DirEntry]]:
    """Visible subfolders and files of ``folder``, sorted by name; hidden entries are counted."""
    dirs, files = [], []
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith(".") or entry.name in IGNORED:
                log_skip(_join(rel, entry.name), "hidden", skipped)
            elif entry.is_dir():
                dirs.append(entry)
            elif entry.is_file():
                files.append(entry)
            else:  # a broken link, a socket
                log_skip(_join(rel, entry.name), "unreadable", skipped)
    return dirs, files


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name
