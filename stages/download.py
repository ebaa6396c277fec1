"""download: materialise the dataset named by data.name into the canonical prepared form."""

import argparse

from imageclust.cli import run_stage, write_metrics
from imageclust.config import load_params
from imageclust.data.params import DataParams
from imageclust.data.stage import prepare


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="prepared data folder")
    parser.add_argument("--metrics", required=True, help="metrics JSON to write")
    return parser


def main(args: argparse.Namespace) -> None:
    gparams, data_params = load_params(DataParams, path=args.params)
    meta = prepare(data_params, gparams.seed, args.out)
    write_metrics(
        args.metrics,
        {k: meta[k] for k in ("name", "num_samples", "labeled", "counts", "skipped")},
        images=meta["num_samples"],
    )


if __name__ == "__main__":
    run_stage(main, build_parser())
