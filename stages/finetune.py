"""finetune: a deep clustering method that improves on the cluster stage's assignments (SCAN by default)."""

import argparse

from imageclust.cli import run_stage
from imageclust.config import load_params
from imageclust.finetune import run_finetune
from imageclust.io import write_json


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--features", required=True, help="features folder from the extract stage")
    parser.add_argument("--clusters", required=True, help="output folder of the cluster stage")
    parser.add_argument("--out", required=True, help="folder for the fine-tuned assignments and head")
    parser.add_argument("--live", required=True, help="DVCLive folder for the training curves")
    parser.add_argument("--metrics", required=True, help="metrics JSON to write")
    return parser


def main(args: argparse.Namespace) -> None:
    gparams, data_params, params = load_params("data", "finetune", path=args.params)
    summary = run_finetune(args.features, args.clusters, args.out, args.live, gparams, data_params, None, params)
    write_json(args.metrics, summary)


if __name__ == "__main__":
    run_stage(main, build_parser())
