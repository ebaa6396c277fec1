"""cluster: a classical clustering of the extracted features (k-means by default)."""

import argparse

from imageclust.cli import run_stage, write_metrics
from imageclust.clustering.params import ClusterParams
from imageclust.clustering.stage import run_clustering
from imageclust.config import load_params, read_params_file
from imageclust.data.prepared import train_splits


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--features", required=True, help="features folder from the extract stage")
    parser.add_argument("--out", required=True, help="folder for assignments and the fitted model")
    parser.add_argument("--metrics", required=True, help="metrics JSON to write")
    return parser


def main(args: argparse.Namespace) -> None:
    gparams, params = load_params(ClusterParams, path=args.params)
    splits = train_splits(read_params_file(args.params))
    write_metrics(args.metrics, run_clustering(args.features, args.out, gparams.seed, splits, params))


if __name__ == "__main__":
    run_stage(main, build_parser())
