"""plot: confusion matrices, cluster sizes, 2-D maps, contact sheets, training curves and report.html
(DVC-cached), and the per-cluster CSVs (committed)."""

from __future__ import annotations

import argparse
from pathlib import Path

from imageclust.cli import named_path, require_files, run_stage, unique_named_paths
from imageclust.config import load_params
from imageclust.plots.params import PlotParams
from imageclust.plots.stage import make_all_plots
from imageclust.tables import feature_shards


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--features", type=Path, required=True, help="features folder (extract stage)")
    parser.add_argument(
        "--prepared", type=Path, required=True, help="prepared data folder (download stage): images, ids, class names"
    )
    parser.add_argument(
        "--source",
        type=named_path,
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="cluster assignments parquet; repeatable; the last one colours the embedding",
    )
    parser.add_argument(
        "--curves",
        type=named_path,
        action="append",
        default=[],
        metavar="STAGE=DIR",
        help="a stage's DVCLive folder, whose losses are drawn; repeatable",
    )
    parser.add_argument("--k-curve", type=Path, help="the cluster stage's k_curve.csv; drawn when it exists")
    parser.add_argument(
        "--metrics",
        type=named_path,
        action="append",
        default=[],
        metavar="STAGE=PATH",
        help="a stage's metrics JSON for the report; repeatable; evaluate's gives the scores table",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder of the pictures and report.html (DVC-cached), replaced as a whole",
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="folder of the per-cluster CSVs (small, committed to git), replaced as a whole; default: --out",
    )
    return parser


def main(args: argparse.Namespace) -> None:
    gparams, params = load_params(PlotParams, path=args.params)
    sources = unique_named_paths(args.source, "--source")
    live_dirs = unique_named_paths(args.curves, "--curves")
    metrics = unique_named_paths(args.metrics, "--metrics")
    feature_shards(args.features)
    require_files(*sources.values(), *metrics.values())
    make_all_plots(
        args.features,
        sources,
        args.prepared,
        live_dirs,
        args.out,
        params,
        gparams.seed,
        args.k_curve,
        metrics,
        data_dir=args.data,
    )


if __name__ == "__main__":
    run_stage(main, build_parser())
