"""Fine-tuning methods on the features a project has already extracted, as its finetune stage runs
them (``run_finetune``, the same code), without DVC: each with its own overrides, and optionally with
further representation spaces (the extract_spaces stage's folder, or any such folder). Scored on a
labelled split; the labels are read only to score.

Usage, on a project whose extract and cluster stages have run:
``python benchmarks/on_features.py --project /tmp/exp/cifar --spaces /tmp/exp/two/spaces --name
cifar10_two_spaces --method turtle --out benchmarks/results/on_features.json``; ``--features`` replaces the
project's features (for instance one space alone), ``--set key=value`` overrides the method's block.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from imageclust.config import GlobalParams, load_section  # noqa: E402
from imageclust.finetune.params import FinetuneParams  # noqa: E402
from imageclust.finetune.stage import run_finetune  # noqa: E402
from imageclust.metrics import clustering_accuracy  # noqa: E402
from imageclust.paths import artifact_paths  # noqa: E402
from imageclust.tables import read_assignments  # noqa: E402


def measure(
    features: Path, clusters: Path, spaces: Path | None, method: str, overrides: dict, score_split: str, seed: int
) -> dict:
    params = load_section(FinetuneParams, {"finetune": {"method": method, method: overrides}})
    with tempfile.TemporaryDirectory(prefix="on-features-") as tmp:
        started = time.perf_counter()
        summary = run_finetune(
            features,
            clusters,
            Path(tmp) / "out",
            Path(tmp) / "live",
            GlobalParams(seed=seed, device="cpu"),
            ["train"],
            params,
            spaces_dir=spaces,
        )
        seconds = time.perf_counter() - started
        a = read_assignments(Path(tmp) / "out" / "assignments.parquet")
    scored = a.splits == score_split
    return {
        "method": method,
        "overrides": overrides,
        "features": str(features),
        "spaces": summary["spaces"],
        "acc": round(clustering_accuracy(a.labels[scored], a.clusters[scored]), 4),
        "cluster_sizes": summary["cluster_sizes"],
        "seconds": round(seconds, 1),
        **{key: summary[key] for key in ("generalisation_score", "generalisation_scores") if key in summary},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, help="a pipeline folder whose extract and cluster ran")
    parser.add_argument("--features", type=Path, help="features folder instead of the project's")
    parser.add_argument("--spaces", type=Path, help="further spaces: an extract_spaces stage's folder")
    parser.add_argument("--method", required=True)
    parser.add_argument("--set", action="append", default=[], help="key=value of the method's block")
    parser.add_argument("--score-split", default="test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", required=True, help="the result's key in --out")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = artifact_paths(args.project)
    overrides = {key: yaml.safe_load(value) for key, value in (kv.split("=", 1) for kv in args.set)}
    result = measure(
        args.features or paths["features"],
        paths["cluster"],
        args.spaces,
        args.method,
        overrides,
        args.score_split,
        args.seed,
    )
    print(json.dumps(result), flush=True)
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    report[args.name] = result
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
