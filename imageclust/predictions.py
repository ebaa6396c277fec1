"""What ``predict`` writes: the CSV of new images' clusters, and a folder per cluster holding them,
named by the user's names for the clusters when given (``--names``: a CSV of ``cluster,name``)."""

from __future__ import annotations

import csv
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError
from .io import atomic_dir, atomic_path

# a name becomes a folder name: letters, digits, spaces and ._- only, so that it is one safe path part
SAFE_NAME = re.compile(r"^[\w .-]+$")


@dataclass
class Predictions:
    paths: list[Path]
    clusters: np.ndarray  # -1 where the image could not be read (or for HDBSCAN's noise)
    confidence: np.ndarray
    distance: np.ndarray
    stage_clusters: np.ndarray
    errors: dict[int, str] = field(default_factory=dict)  # position -> why it was not read
    matched: dict[int, str] = field(default_factory=dict)  # cluster -> class name
    names: dict[int, str] = field(default_factory=dict)  # cluster -> the user's name for it


def read_cluster_names(path: Path) -> dict[int, str]:
    """``{cluster: name}`` from a CSV with the columns ``cluster`` and ``name`` (others are ignored,
    so a copy of ``plots/cluster_labels_finetune.csv`` with a ``name`` column added will do)."""
    if not path.is_file():
        raise DataError(f"--names {path}: not found")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"cluster", "name"} <= set(reader.fieldnames or ()):
            raise DataError(f"--names {path}: needs the columns `cluster` and `name`, has {reader.fieldnames}")
        names = {}
        for line, row in enumerate(reader, start=2):
            cluster, name = (row["cluster"] or "").strip(), (row["name"] or "").strip()
            if not name:
                continue  # a cluster left unnamed keeps its number
            if not cluster.isdigit():
                raise DataError(f"--names {path}, line {line}: cluster {cluster!r} is not a cluster number")
            if not SAFE_NAME.match(name) or name in (".", ".."):
                raise DataError(f"--names {path}, line {line}: name {name!r} must be letters, digits, spaces, ._-")
            if int(cluster) in names:
                raise DataError(f"--names {path}, line {line}: cluster {cluster} is named twice")
            names[int(cluster)] = name
    if len(set(names.values())) < len(names):
        raise DataError(f"--names {path}: two clusters share a name; give each its own")
    return names


def write_csv(path: Path, p: Predictions) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(
                ["path", "cluster", "name", "confidence", "distance", "matched_class", "cluster_stage_cluster", "error"]
            )
            for i, image in enumerate(p.paths):
                if i in p.errors:
                    writer.writerow([str(image), "", "", "", "", "", "", p.errors[i]])
                    continue
                cluster = int(p.clusters[i])
                writer.writerow(
                    [
                        str(image),
                        cluster,
                        p.names.get(cluster, ""),
                        f"{p.confidence[i]:.6f}",
                        f"{p.distance[i]:.6f}",
                        p.matched.get(cluster, ""),
                        int(p.stage_clusters[i]),
                        "",
                    ]
                )


def check_new_folder(folder: Path) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise DataError(f"--sort-into {folder}: exists and is not an empty folder; choose a new one")


def sort_into(folder: Path, p: Predictions, link: bool) -> None:
    """One sub-folder per cluster (its name, else ``cluster_007``; ``noise``) holding a copy of, or a
    link to, each image."""
    check_new_folder(folder)
    with atomic_dir(folder) as tmp:
        for i, image in enumerate(p.paths):
            if i in p.errors:
                continue
            cluster = int(p.clusters[i])
            target_dir = tmp / ("noise" if cluster < 0 else p.names.get(cluster, f"cluster_{cluster:03d}"))
            target_dir.mkdir(exist_ok=True)
            target = target_dir / image.name
            serial = 1
            while target.exists() or target.is_symlink():  # same name from another folder
                target = target_dir / f"{image.stem}_{serial}{image.suffix}"
                serial += 1
            if link:
                os.symlink(image.resolve(), target)
            else:
                shutil.copy2(image, target)
