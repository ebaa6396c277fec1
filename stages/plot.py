"""Plot stage: confusion matrices, cluster sizes, a 2-D embedding and training curves into one folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from imageclust.cli import run_stage
from imageclust.config import load_params
from imageclust.errors import DataError
from imageclust.plots import make_all_plots
from imageclust.tables import FEATURE_SHARD_GLOB


def name_path(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def unique_mapping(pairs: list[tuple[str, Path]], option: str) -> dict[str, Path]:
    names = [name for name, _ in pairs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise DataError(f"{option} {duplicate} given more than once")
    return dict(pairs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--features", type=Path, required=True, help="features folder (extract stage)")
    parser.add_argument("--meta", type=Path, required=True, help="prepared data meta.json (class names)")
    parser.add_argument("--source", type=name_path, action="append", required=True, metavar="NAME=PATH",
                        help="cluster assignments parquet; repeatable; the last one colours the embedding")
    parser.add_argument("--curve", type=name_path, action="append", default=[], metavar="NAME=PATH",
                        help="DVCLive metric TSV; repeatable; missing files are skipped")
    parser.add_argument("--out", type=Path, required=True, help="output folder, replaced as a whole")
    return parser


def main(args: argparse.Namespace) -> None:
    globals_, params = load_params("plot", path=args.params)
    sources = unique_mapping(args.source, "--source")
    curves = unique_mapping(args.curve, "--curve")
    # check every required input before anything is written, so a failure leaves no output behind
    if not any(args.features.glob(FEATURE_SHARD_GLOB)):
        raise DataError(f"{args.features}: no feature shards ({FEATURE_SHARD_GLOB}); run the extract stage")
    for path in [args.meta, *sources.values()]:
        if not path.is_file():
            raise DataError(f"{path}: not found")
    make_all_plots(args.features, sources, args.meta, curves, args.out, params, globals_.seed)


if __name__ == "__main__":
    run_stage(main, build_parser())
