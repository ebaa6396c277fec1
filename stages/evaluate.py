"""Evaluate stage: score each source of cluster assignments and write the metrics as JSON.

    python stages/evaluate.py --features artifacts/features \
        --source cluster=artifacts/cluster/assignments.parquet \
        --source finetune=artifacts/finetune/assignments.parquet --out metrics/evaluate.json
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from imageclust.cli import run_stage
from imageclust.config import load_params
from imageclust.errors import DataError, UserError
from imageclust.evaluate import ALL_SPLITS, evaluate_sources
from imageclust.io import write_json
from imageclust.tables import FEATURE_SHARD_GLOB, read_assignments, read_features

log = logging.getLogger("evaluate")


def source_arg(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not (sep and name and path):
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, required=True, help="feature folder written by the extract stage")
    parser.add_argument("--source", type=source_arg, action="append", required=True, metavar="NAME=PATH",
                        help="assignments parquet to score under NAME (repeatable)")
    parser.add_argument("--out", type=Path, required=True, help="metrics JSON to write")
    return parser


def check_inputs(features: Path, sources: list[tuple[str, Path]]) -> None:
    """Fail before reading or writing anything, so a bad call leaves the previous metrics in place."""
    names = [name for name, _ in sources]
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate is not None:
        raise UserError(f"--source name {duplicate!r} is given more than once")
    if not any(features.glob(FEATURE_SHARD_GLOB)):
        raise DataError(f"features: no {FEATURE_SHARD_GLOB} shards in {features}; run the extract stage")
    for name, path in sources:
        if not path.is_file():
            raise DataError(f"source {name}: {path} not found; run the stage that writes it")


def main(args: argparse.Namespace) -> None:
    globals_, params = load_params("evaluate", path=args.params)
    check_inputs(args.features, args.source)
    features = read_features(args.features)
    sources = {name: read_assignments(path) for name, path in args.source}
    results = evaluate_sources(features, sources, params.max_silhouette_samples, globals_.seed)
    write_json(args.out, results)
    for name, splits in results.items():
        scores = splits[ALL_SPLITS]
        if "acc" in scores:
            log.info("%s/%s: acc=%.4f nmi=%.4f ari=%.4f (n=%d, labelled %d)", name, ALL_SPLITS, scores["acc"],
                     scores["nmi"], scores["ari"], scores["n"], scores["n_labeled"])
        else:
            log.info("%s/%s: no labelled samples (n=%d)", name, ALL_SPLITS, scores["n"])
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    run_stage(main, build_parser())
