"""extract: one feature vector per prepared sample, from the pretrain stage's encoder or a named backbone."""

import argparse

from imageclust.cli import run_stage, write_metrics
from imageclust.config import load_params
from imageclust.features.params import ExtractParams
from imageclust.features.stage import extract_features


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="prepared data folder")
    parser.add_argument("--encoder", required=True, help="backbone written by the pretrain stage")
    parser.add_argument("--out", required=True, help="features folder (parquet shards and _meta.json)")
    parser.add_argument("--work", required=True, help="folder of finished shards kept across runs, to resume")
    parser.add_argument(
        "--engines",
        help="cache of exported graphs and engine choices (default: this machine's, "
        "~/.cache/imageclust/engines or $IMAGECLUST_CACHE/engines)",
    )
    parser.add_argument("--metrics", help="metrics JSON to write")
    return parser


def main(args: argparse.Namespace) -> None:
    gparams, params = load_params(ExtractParams, path=args.params)
    summary = extract_features(args.data, args.encoder, args.out, args.work, gparams, params, args.engines)
    if summary is not None and args.metrics:  # only the main process of a distributed run reports
        write_metrics(args.metrics, summary, images=summary["rows"])


if __name__ == "__main__":
    run_stage(main, build_parser())
