"""extract_spaces: the features of the further representation spaces of extract.spaces and of the referee
spaces of extract.referees (none by default)."""

import argparse

from imageclust.cli import run_stage, write_metrics
from imageclust.config import load_params, read_params_file
from imageclust.data.prepared import train_splits
from imageclust.features.params import ExtractParams
from imageclust.features.spaces import extract_spaces


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="prepared data folder")
    parser.add_argument(
        "--out", required=True, help="the spaces' folder: a features folder per space, referees/, spaces.json"
    )
    parser.add_argument("--work", required=True, help="folder of finished shards kept across runs, to resume")
    parser.add_argument("--engines", help="cache of exported graphs and engine choices (as the extract stage's)")
    parser.add_argument("--metrics", help="metrics JSON to write")
    return parser


def main(args: argparse.Namespace) -> None:
    gparams, params = load_params(ExtractParams, path=args.params)
    summary = extract_spaces(
        args.data, args.out, args.work, gparams, params, args.engines, train_splits(read_params_file(args.params))
    )
    if summary is not None and args.metrics:  # only the main process of a distributed run reports
        referee_rows = sum(referee["rows"] for referee in summary["referees"].values())
        write_metrics(args.metrics, summary, images=summary["rows"] * summary["spaces"] + referee_rows)


if __name__ == "__main__":
    run_stage(main, build_parser())
