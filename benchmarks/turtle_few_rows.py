"""TURTLE on few images: ``finetune.turtle.pca_dim`` fixed against a cap of one component per
``rows_per_component`` training rows, on the size-prior benchmark's draws (ten classes, balanced and
sizes falling 10:1), beside the cluster stage's k-means and SCAN. Per variant: ACC, classes kept
(``size_prior.classes_kept``), seconds, and the neighbour and linear scores ``auto`` judges by. The
labels only score.

Usage: ``python benchmarks/turtle_few_rows.py --data cifar10=PROJECT --dims 256 64 32 --caps 25
--per-class 150 --seeds 0 1 2 --out benchmarks/results/turtle_few_rows.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.size_prior import classes_kept, cluster_stage, drawn_cases, finetune_run, store_case  # noqa: E402
from imageclust.finetune.guard import Referee  # noqa: E402
from imageclust.finetune.registry import METHODS  # noqa: E402
from imageclust.metrics import clustering_accuracy  # noqa: E402


def variants(dims: list[int], caps: list[int]) -> list[tuple[str, str, dict]]:
    """(name, method, overrides of its block): SCAN, TURTLE on each fixed number of components (the cap
    off) and TURTLE with each ``rows_per_component`` (``pca_dim`` at its default)."""
    return [
        ("scan", "scan", {}),
        *((f"turtle{dim}", "turtle", {"pca_dim": dim, "rows_per_component": None}) for dim in dims),
        *((f"turtle_cap{cap}", "turtle", {"rows_per_component": cap}) for cap in caps),
    ]


def run_case(vectors, labels, cluster_params, dims: list[int], caps: list[int], seed: int) -> dict:
    k, initial = cluster_stage(vectors, labels, cluster_params, seed)
    referee = Referee(vectors, seed)
    defaults = yaml.safe_load((REPO / "params.yaml").read_text())["finetune"]

    def scored(clusters) -> dict:
        judged = {s: round(referee.judge(clusters, s), 4) for s in ("neighbour", "linear")}
        acc = round(clustering_accuracy(labels, clusters), 4)
        return {"acc": acc, "kept": classes_kept(labels, clusters), **judged}

    row = {"n": len(labels), "d": vectors.shape[1], "none": scored(initial)}
    for name, method, overrides in variants(dims, caps):
        block = {"method": method, method: {**defaults[method], **overrides}, "floor": False, "size_prior": "auto"}
        started = time.perf_counter()
        clusters = METHODS[method].run(finetune_run(vectors, labels, initial, k, block, seed)).clusters
        row[name] = {**scored(clusters), "seconds": round(time.perf_counter() - started, 1)}
        print(f"    {name}: {row[name]}", flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True, metavar="NAME=PROJECT")
    parser.add_argument("--dims", type=int, nargs="*", default=[256, 64, 32], help="fixed components, no cap")
    parser.add_argument("--caps", type=int, nargs="*", default=[25], help="rows_per_component values")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report = json.loads(args.out.read_text()) if args.out.exists() else {"cases": []}  # other data and seeds kept
    for name, case, seed, vectors, labels, cluster_params in drawn_cases(args.data, args.seeds, args.per_class):
        row = run_case(vectors, labels, cluster_params, args.dims, args.caps, seed)
        store_case(report, args.out, {"data": name, "case": case, "seed": seed, **row})


if __name__ == "__main__":
    main()
