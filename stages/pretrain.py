"""pretrain: self-supervised training of a backbone on the prepared training splits."""

import argparse

from imageclust.cli import run_stage, write_metrics
from imageclust.config import load_params, raw_value, read_params_file
from imageclust.data.prepared import train_splits
from imageclust.models.encoder import EXTRACTOR
from imageclust.pretrain.params import PretrainParams
from imageclust.pretrain.stage import run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="prepared data folder")
    parser.add_argument("--encoder", required=True, help="where to write the trained backbone")
    parser.add_argument("--checkpoints", required=True, help="checkpoint folder, kept across runs to resume")
    parser.add_argument("--live", required=True, help="DVCLive folder for the training curves")
    parser.add_argument("--metrics", required=True, help="metrics JSON to write")
    return parser


def main(args: argparse.Namespace) -> None:
    gparams, params = load_params(PretrainParams, path=args.params)
    raw = read_params_file(args.params)
    summary = run(
        args.data,
        args.encoder,
        args.checkpoints,
        args.live,
        gparams,
        train_splits(raw),
        params,
        extract_backbone=raw_value(raw, "extract.backbone", EXTRACTOR),
    )
    if summary is not None:  # only the main process of a distributed run reports
        write_metrics(args.metrics, summary, images=summary.get("images_trained"))


if __name__ == "__main__":
    run_stage(main, build_parser())
