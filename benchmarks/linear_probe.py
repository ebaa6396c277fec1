"""What a run's features allow when labels are used: the ceiling under which the label-free methods work.

Two measurements on an extract stage's output (``artifacts/features``), both on L2-normalised
vectors as the cluster stage sees them:

- the linear probe (the standard test of a self-supervised representation, as in SimCLR and MoCo):
  logistic regression fitted on one split's labels and scored on another's;
- neighbour agreement: how often a sample's nearest neighbours share its class, the pairs SCAN and
  TEMI learn from (``neighbor_label_agreement`` in ``metrics/finetune.json`` measures the same).

Clustering rarely beats the probe: if a supervised linear classifier on these features misses a
target, no clustering of them reaches it. Usage, on the clones ``quality.py --workdir`` keeps:
``python benchmarks/linear_probe.py --run mnist/seed2=/tmp/bq/mnist-seed2 --out
benchmarks/results/linear_probe.json``; ``--run NAME=PROJECT:SPACE`` probes a space of
``extract.spaces`` (``artifacts/spaces/SPACE``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import normalize

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from imageclust.finetune.scan import mine_neighbors, neighbor_label_agreement  # noqa: E402
from imageclust.tables import read_features  # noqa: E402


def probe(
    features_dir: Path, fit_split: str = "train", score_split: str = "test", num_neighbors: int = 10, c: float = 10.0
) -> dict:
    """Linear-probe accuracy (fit on ``fit_split``, scored on ``score_split``) and the neighbour
    agreement over both splits."""
    table = read_features(features_dir)
    fit, score = table.splits == fit_split, table.splits == score_split
    for split, mask in ((fit_split, fit), (score_split, score)):
        if not mask.any() or (table.labels[mask] < 0).any():
            raise SystemExit(f"{features_dir}: split {split!r} is missing or not fully labelled")
    vectors = normalize(table.vectors.astype(np.float64))
    started = time.perf_counter()
    classifier = LogisticRegression(C=c, max_iter=500).fit(vectors[fit], table.labels[fit])
    both = fit | score
    neighbors = mine_neighbors(torch.from_numpy(vectors[both]).float(), num_neighbors)
    return {
        "fit_split": fit_split,
        "score_split": score_split,
        "dim": int(vectors.shape[1]),
        "linear_probe_acc": round(float(classifier.score(vectors[score], table.labels[score])), 4),
        "linear_probe_fit_acc": round(float(classifier.score(vectors[fit], table.labels[fit])), 4),
        "num_neighbors": num_neighbors,
        "neighbor_label_agreement": round(
            neighbor_label_agreement(table.labels[both], neighbors)["neighbor_label_agreement"], 4
        ),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run",
        action="append",
        required=True,
        metavar="NAME=PROJECT[:SPACE]",
        help="a benchmark run's name and its project folder (repeatable); :SPACE probes artifacts/spaces/SPACE",
    )
    parser.add_argument("--fit-split", default="train")
    parser.add_argument("--score-split", default="test")
    parser.add_argument("--out", type=Path, required=True, help="JSON file the results are merged into")
    args = parser.parse_args(argv)
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    for item in args.run:
        name, sep, project = item.partition("=")
        if not sep:
            parser.error(f"--run {item!r}: expected NAME=PROJECT")
        project, _, space = project.partition(":")  # PROJECT:SPACE, a space of extract.spaces
        features = Path(project) / "artifacts" / (f"spaces/{space}" if space else "features")
        report[name] = probe(features, args.fit_split, args.score_split)
        print(json.dumps({name: report[name]}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
