"""export: every sample's cluster, confidence, split and label as CSV and parquet."""

from __future__ import annotations

import argparse
from pathlib import Path

from imageclust.cli import named_path, require_files, run_stage, unique_named_paths
from imageclust.data.prepared import load_prepared
from imageclust.export import assignments_frame, write_export
from imageclust.tables import read_assignments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", type=Path, required=True, help="prepared data folder (download stage)")
    parser.add_argument(
        "--source",
        type=named_path,
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="assignments parquet; repeatable; the last one is the final assignment",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder, replaced as a whole")
    return parser


def main(args: argparse.Namespace) -> None:
    sources = unique_named_paths(args.source, "--source")
    require_files(*sources.values())
    prepared = load_prepared(args.prepared)
    write_export(args.out, assignments_frame(prepared, {name: read_assignments(p) for name, p in sources.items()}))


if __name__ == "__main__":
    run_stage(main, build_parser())
