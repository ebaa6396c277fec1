"""evaluate: score each source of cluster assignments (label-based and label-free) into one JSON."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from imageclust.cli import named_path, require_files, run_stage, unique_named_paths
from imageclust.config import load_params
from imageclust.evaluate import EvaluateParams, evaluate_sources
from imageclust.io import write_json
from imageclust.tables import feature_shards, read_assignments, read_features

log = logging.getLogger("evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--features", type=Path, required=True, help="feature folder written by the extract stage")
    parser.add_argument(
        "--source",
        type=named_path,
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="assignments parquet to score under NAME (repeatable)",
    )
    parser.add_argument("--out", type=Path, required=True, help="metrics JSON to write")
    return parser


def main(args: argparse.Namespace) -> None:
    gparams, params = load_params(EvaluateParams, path=args.params)
    sources = unique_named_paths(args.source, "--source")
    feature_shards(args.features)
    require_files(*sources.values())
    features = read_features(args.features)
    results = evaluate_sources(
        features,
        {name: read_assignments(path) for name, path in sources.items()},
        params.max_silhouette_samples,
        gparams.seed,
        params.splits,
    )
    write_json(args.out, results)
    for name, splits in results.items():
        for split, scores in splits.items():
            if "acc" in scores:
                log.info(
                    "%s/%s: acc=%.4f nmi=%.4f ari=%.4f (n=%d, labelled %d)",
                    name,
                    split,
                    scores["acc"],
                    scores["nmi"],
                    scores["ari"],
                    scores["n"],
                    scores["n_labeled"],
                )
            else:
                log.info("%s/%s: no labelled samples (n=%d)", name, split, scores["n"])


if __name__ == "__main__":
    run_stage(main, build_parser())
