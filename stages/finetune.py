"""finetune: a deep clustering method that improves on the cluster stage's assignments (SCAN by default)."""

import argparse

from imageclust.cli import run_stage, write_metrics
from imageclust.config import load_params, raw_value, read_params_file
from imageclust.data.prepared import train_splits
from imageclust.finetune.params import FinetuneParams, check_backbone
from imageclust.finetune.stage import run_finetune
from imageclust.models.encoder import EXTRACTOR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--features", required=True, help="features folder from the extract stage")
    parser.add_argument("--spaces", help="the extract_spaces stage's folder (further representation spaces)")
    parser.add_argument("--clusters", required=True, help="output folder of the cluster stage")
    parser.add_argument("--data", required=True, help="prepared data (methods that train the encoder read the images)")
    parser.add_argument("--encoder", required=True, help="the pretrain stage's encoder (where methods train it)")
    parser.add_argument("--out", required=True, help="folder for the fine-tuned assignments and model")
    parser.add_argument("--checkpoints", required=True, help="checkpoint folder, kept across runs to resume")
    parser.add_argument("--live", required=True, help="DVCLive folder for the training curves")
    parser.add_argument("--metrics", required=True, help="metrics JSON to write")
    return parser


def main(args: argparse.Namespace) -> None:
    gparams, params = load_params(FinetuneParams, path=args.params)
    raw = read_params_file(args.params)
    check_backbone(params, raw_value(raw, "extract.backbone", EXTRACTOR))
    summary = run_finetune(
        args.features,
        args.clusters,
        args.out,
        args.live,
        gparams,
        train_splits(raw),
        params,
        prepared_dir=args.data,
        encoder_path=args.encoder,
        checkpoint_dir=args.checkpoints,
        spaces_dir=args.spaces,
        encoder_pretrained=raw_value(raw, "pretrain.method", None) != "none",
    )
    write_metrics(args.metrics, summary, images=summary.get("images_trained"))


if __name__ == "__main__":
    run_stage(main, build_parser())
