"""extract: one feature vector per prepared sample, from the pretrained encoder or a named extractor."""

import argparse

from imageclust.cli import run_stage
from imageclust.config import load_params
from imageclust.features import extract_features


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="prepared data folder")
    parser.add_argument("--encoder", required=True, help="backbone written by the pretrain stage")
    parser.add_argument("--out", required=True, help="features folder (parquet shards)")
    return parser


def main(args: argparse.Namespace) -> None:
    gparams, params = load_params("extract", path=args.params)
    extract_features(args.data, args.encoder, args.out, gparams, params)


if __name__ == "__main__":
    run_stage(main, build_parser())
