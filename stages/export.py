"""export: every sample's cluster, confidence, split and label as CSV and parquet, and the model
folder that sorts new images (registered in dvc.yaml's artifacts as image-clusterer)."""

from __future__ import annotations

import argparse
from pathlib import Path

from imageclust.bundle import write_bundle
from imageclust.cli import named_path, require_files, run_stage, unique_named_paths
from imageclust.data.prepared import load_prepared
from imageclust.errors import UserError
from imageclust.export import assignments_frame, write_export
from imageclust.tables import read_assignments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", type=Path, required=True, help="prepared data folder (download stage)")
    parser.add_argument(
        "--source",
        type=named_path,
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="assignments parquet; repeatable; the last one is the final assignment",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder, replaced as a whole")
    parser.add_argument("--model", type=Path, help="model folder to write, replaced as a whole (needs the next five)")
    parser.add_argument("--features", type=Path, help="features folder (extract stage)")
    parser.add_argument("--spaces", type=Path, help="the extract_spaces stage's folder")
    parser.add_argument("--cluster", type=Path, help="the cluster stage's folder")
    parser.add_argument("--finetune", type=Path, help="the finetune stage's folder")
    parser.add_argument("--encoder", type=Path, help="the pretrain stage's encoder")
    return parser


MODEL_INPUTS = ("prepared", "features", "spaces", "cluster", "finetune", "encoder")


def main(args: argparse.Namespace) -> None:
    sources = unique_named_paths(args.source, "--source")
    require_files(*sources.values())
    if args.model is not None:
        missing = [f"--{name}" for name in MODEL_INPUTS if getattr(args, name) is None]
        if missing:
            raise UserError(f"--model needs {', '.join(missing)}")
    prepared = load_prepared(args.prepared)
    frame = assignments_frame(prepared, {name: read_assignments(p) for name, p in sources.items()})
    if args.model is not None:
        write_bundle(args.model, {name: getattr(args, name) for name in MODEL_INPUTS}, args.params)
    write_export(args.out, frame)


if __name__ == "__main__":
    run_stage(main, build_parser())
