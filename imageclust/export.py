"""Every sample's cluster as one table, for spreadsheets, annotators and downstream code.

Columns: ``id`` (for an image folder, the image's path inside it), ``index`` (its row in
``data/prepared/images.npy``), ``split``, ``label`` and ``class`` (empty when unknown), then the
final assignment (``cluster``, ``confidence``, ``matched_class``: the class that cluster is matched
to one-to-one when labels exist), then each earlier source's ``<name>_stage_cluster`` and
``<name>_stage_confidence``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .bundle import fetch_at_rev, registered
from .cli import EXIT_USER_ERROR
from .errors import DataError, UserError
from .io import atomic_dir
from .metrics import hungarian_match
from .paths import artifact_paths
from .tables import UNLABELED, Assignments

CSV_FILE = "assignments.csv"
PARQUET_FILE = "assignments.parquet"


def _aligned(prepared_ids: np.ndarray, a: Assignments, name: str) -> np.ndarray:
    """Row of ``a`` for each prepared sample, -1 where it has none."""
    position = {sample_id: row for row, sample_id in enumerate(a.ids.tolist())}
    rows = np.array([position.pop(i, -1) for i in prepared_ids.tolist()], dtype=np.int64)
    if position:  # ids left over are in no prepared sample
        raise DataError(f"source {name}: id {next(iter(position))!r} is not in the prepared data; is the source stale?")
    return rows


def assignments_frame(prepared, sources: dict[str, Assignments]) -> pd.DataFrame:
    """One row per prepared sample that the final (last) source assigned, in the prepared order."""
    if not sources:
        raise ValueError("assignments_frame needs at least one source")
    rows = {name: _aligned(prepared.ids, a, name) for name, a in sources.items()}
    final_name, final = list(sources.items())[-1]
    keep = np.flatnonzero(rows[final_name] >= 0)
    labels = prepared.labels[keep]
    labelled = labels != UNLABELED
    classes = np.asarray(prepared.classes, dtype=object)
    frame = pd.DataFrame(
        {
            "id": prepared.ids[keep].astype(str),
            "index": keep,
            "split": prepared.splits[keep].astype(str),
            "label": pd.array(np.where(labelled, labels, 0), dtype="Int64"),
            "class": pd.array(
                np.where(labelled, classes[np.maximum(labels, 0)] if len(classes) else "", None), dtype="string"
            ),
        }
    )
    frame.loc[~labelled, "label"] = pd.NA
    for name in [final_name, *(n for n in sources if n != final_name)]:
        a, at = sources[name], rows[name][keep]
        clusters = np.where(at >= 0, a.clusters[np.maximum(at, 0)], 0)
        confidence = np.where(at >= 0, a.confidence[np.maximum(at, 0)], np.nan).astype(np.float32)
        prefix = "" if name == final_name else f"{name}_stage_"
        frame[f"{prefix}cluster"] = pd.array(clusters, dtype="Int64")
        frame.loc[at < 0, f"{prefix}cluster"] = pd.NA
        frame[f"{prefix}confidence"] = confidence
        if name == final_name:
            mapping = hungarian_match(labels[labelled], clusters[labelled]) if labelled.any() else {}
            matched = [prepared.classes[mapping[c]] if c in mapping else None for c in clusters.tolist()]
            frame["matched_class"] = pd.array(matched, dtype="string")
    return frame


def write_export(out_dir: str | Path, frame: pd.DataFrame) -> None:
    with atomic_dir(out_dir) as tmp:
        frame.to_parquet(tmp / PARQUET_FILE, index=False)
        frame.to_csv(tmp / CSV_FILE, index=False)


def main(argv: list[str] | None = None) -> int:
    """``python -m imageclust export (--rev REV | --model NAME) --out FOLDER``: the assignments table
    of another run, a git revision's or DVC experiment's, or the run that made a registered model."""
    parser = argparse.ArgumentParser(prog="python -m imageclust export", description=main.__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--rev", help="a git commit, branch, tag or DVC experiment of the project")
    source.add_argument("--model", help="a registered model, NAME[@vX.Y.Z]: the run that made it")
    parser.add_argument("--out", type=Path, required=True, help="a new folder for assignments.csv and .parquet")
    parser.add_argument("--project", type=Path, default=Path("."), help="the pipeline's folder (default: here)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        if args.out.exists():
            raise DataError(f"--out {args.out}: exists; choose a new folder")
        rev, what = args.rev, "--rev"
        if args.model:
            rev, what = registered(args.project, args.model)[0], f"--model {args.model}"
        export_path = artifact_paths(args.project)["export"].relative_to(args.project)
        with tempfile.TemporaryDirectory() as scratch, atomic_dir(args.out) as tmp:
            fetched = fetch_at_rev(args.project, rev, export_path, Path(scratch) / "export", what)
            for name in (CSV_FILE, PARQUET_FILE):
                shutil.copy2(fetched / name, tmp / name)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    logging.getLogger("export").info("the assignments of %s (%s) written to %s", what, rev, args.out)
    return 0
