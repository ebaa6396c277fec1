"""pretrain: self-supervised training of a backbone on the prepared training splits."""

import argparse
from pathlib import Path

from imageclust.cli import run_stage, write_metrics
from imageclust.config import load_params
from imageclust.pretrain import NO_PRETRAINING
from imageclust.pretrain.loop import pretrain, random_encoder, skip_pretraining


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="prepared data folder")
    parser.add_argument("--encoder", required=True, help="where to write the trained backbone")
    parser.add_argument("--checkpoints", required=True, help="checkpoint folder, kept across runs to resume")
    parser.add_argument("--live", required=True, help="DVCLive folder for the training curves")
    parser.add_argument("--metrics", required=True, help="metrics JSON to write")
    return parser


def main(args: argparse.Namespace) -> None:
    gparams, data_params, params, extract = load_params("data", "pretrain", "extract", path=args.params)
    Path(args.checkpoints).mkdir(parents=True, exist_ok=True)  # a declared output, even with nothing to train
    if extract.backbone != "encoder":  # a frozen pretrained backbone makes the features: nothing to train
        summary = skip_pretraining(args.encoder, args.live, f"extract.backbone={extract.backbone!r} needs no encoder")
    elif params.method == NO_PRETRAINING:
        summary = random_encoder(args.data, args.encoder, args.live, gparams, params)
    else:
        summary = pretrain(args.data, args.encoder, args.checkpoints, args.live, gparams, data_params, params)
    if summary is not None:  # only the main process of a distributed run reports
        write_metrics(args.metrics, summary, images=summary.get("images_trained"))


if __name__ == "__main__":
    run_stage(main, build_parser())
