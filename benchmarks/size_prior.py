"""Clusters of unequal size: SCAN, TEMI and TURTLE with the uniform size prior (as published) and
with ``finetune.size_prior``'s other settings, on the same classes drawn balanced and with sizes
falling 10:1.

For each project (its extract stage has run) and seed: ten classes drawn with equal sizes, and the
same ten with sizes falling geometrically from the largest to a tenth of it (``choose_k``'s
drawing). Each case is clustered as the project's cluster stage would (its params, K the number of
classes), then each method runs on the case's features from that assignment with this repository's
default params and each prior. Labels only score: ACC, and how many classes keep at least 80% of
their images in one cluster of their own (the one matched to them). ``auto``'s choice rests on the
coefficient of variation of the cluster stage's sizes, reported per case, whose spread over balanced
and imbalanced cases is what sets ``size_prior.UNEQUAL_CV``; its result is that of the run with the
prior it picks (the runs are deterministic). Last, ``finetune.method: auto``'s choice on the case: the
cluster stage's assignment (``none``) and each method with ``auto``'s prior, judged in the case's
features as ``auto`` can judge them (``finetune.auto.score``: ``neighbour``, the default, ``linear``, or
``both``, their mean); per score, the pick and its regret, the best ACC among them minus the pick's.
With ``--long-tail RATIO ...``, each method also runs with ``size_prior: long_tail`` at each
``imbalance_ratio`` (the draws fall 10:1, so 10 is a user who knows the ratio and 3 or 30 one who is off
by a factor of three), kept in its own file (``size_prior_long_tail.json``), whose ``--docs`` writes
the second table only.

Usage: ``python benchmarks/size_prior.py --data digits=PROJECT --data photos=PROJECT [--seeds 0 1]
--out benchmarks/results/size_prior.json [--docs]``; with ``--long-tail 3 10 30 --per-class 150 --out
benchmarks/results/size_prior_long_tail.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.choose_k import _draw, load  # noqa: E402
from benchmarks.common import write_between_markers  # noqa: E402
from imageclust.clustering.preprocess import FeatureTransform  # noqa: E402
from imageclust.clustering.registry import METHODS as CLUSTERINGS  # noqa: E402
from imageclust.config import load_section  # noqa: E402
from imageclust.finetune.base import FinetuneRun  # noqa: E402
from imageclust.finetune.guard import Referee, below_floor  # noqa: E402
from imageclust.finetune.params import FinetuneParams  # noqa: E402
from imageclust.finetune.registry import METHODS  # noqa: E402
from imageclust.finetune.size_prior import size_prior  # noqa: E402
from imageclust.metrics import clustering_accuracy, hungarian_match  # noqa: E402

FINETUNE = ("scan", "temi", "turtle")
PRIORS = ("uniform", "clusters", "auto")
SCORES = ("neighbour", "linear", "both")  # finetune.auto.score's settings; neighbour is the default
DOCS = REPO / "docs" / "results.md"
BEGIN, END = "<!-- size_prior:begin -->", "<!-- size_prior:end -->"
LONG_TAIL_BEGIN, LONG_TAIL_END = "<!-- size_prior_long_tail:begin -->", "<!-- size_prior_long_tail:end -->"


def classes_kept(labels: np.ndarray, clusters: np.ndarray, share: float = 0.8) -> int:
    """Classes with at least ``share`` of their images in the cluster matched to them (one to one)."""
    match = {cls: cluster for cluster, cls in hungarian_match(labels, clusters).items()}
    return sum(int(c in match and (clusters[labels == c] == match[c]).mean() >= share) for c in np.unique(labels))


def draw_pair(labels: np.ndarray, per_class: int, seed: int) -> dict[str, np.ndarray]:
    """Ten classes (all, when there are ten) balanced, and the same with sizes falling 10:1."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(labels))[:10]
    shares = 10.0 ** (-np.arange(len(classes)) / (len(classes) - 1))
    return {
        "balanced": _draw(labels, classes, [per_class] * len(classes), rng),
        "sizes 10:1": _draw(labels, classes, np.maximum((per_class * shares).astype(int), 1), rng),
    }


def drawn_cases(data: list[str], seeds: list[int], per_class: int):
    """For each ``NAME=PROJECT`` of ``data`` and each seed, the two draws of ``draw_pair``: (name, case, seed,
    the draw's vectors, its labels numbered from 0, the project's cluster params)."""
    for item in data:
        name, _, project = item.partition("=")
        vectors, labels, cluster_params = load(project)
        per_class_here = min(per_class, int(np.bincount(labels).min()))
        for seed in seeds:
            for case, rows in draw_pair(labels, per_class_here, seed).items():
                print(f"{name} {case} seed {seed}: {len(rows)} images", flush=True)
                case_labels = np.unique(labels[rows], return_inverse=True)[1]
                yield name, case, seed, vectors[rows], case_labels, cluster_params


def store_case(report: dict, out: Path, row: dict) -> None:
    """Put ``row`` in ``report`` in place of the case of the same data, case and seed, and write it."""
    key = (row["data"], row["case"], row["seed"])
    report["cases"] = [c for c in report["cases"] if (c["data"], c["case"], c["seed"]) != key]
    report["cases"].append(row)
    out.write_text(json.dumps(report, indent=2) + "\n")


def cluster_stage(vectors, labels, cluster_params, seed: int) -> tuple[int, np.ndarray]:
    """K (the draw's classes) and the draw clustered as the project's cluster stage would."""
    k = len(np.unique(labels))
    _, x = FeatureTransform.fit(vectors, cluster_params, seed)
    model = CLUSTERINGS[cluster_params.method].fit(x, k, cluster_params.block, seed)
    return k, model.fit_labels if model.fit_labels is not None else model.predict(x)[0]


def finetune_run(vectors, labels, initial, k: int, block: dict, seed: int) -> FinetuneRun:
    """The finetune stage's input for one method on a draw: every row trains, from ``initial``."""
    return FinetuneRun(
        vectors=vectors,
        labels=labels,
        train=np.ones(len(labels), dtype=bool),
        initial_clusters=initial,
        initial_confidence=np.ones(len(labels), dtype=np.float32),
        num_clusters=k,
        params=load_section(FinetuneParams, {"finetune": block}),
        seed=seed,
        device=torch.device("cpu"),
        curves=None,  # a benchmark keeps no curves
    )


def run_case(vectors, labels, cluster_params, seed: int, long_tail: tuple[float, ...] = ()) -> dict:
    k, initial = cluster_stage(vectors, labels, cluster_params, seed)
    row = {"n": len(labels), "k": k, "kmeans_acc": round(clustering_accuracy(labels, initial), 4)}
    row["kmeans_classes_kept"] = classes_kept(labels, initial)
    defaults = yaml.safe_load((REPO / "params.yaml").read_text())["finetune"]
    referee = Referee(vectors, seed)
    candidates = {"none": (row["kmeans_acc"], judged(referee, initial))}  # method auto's view of the case
    for method in FINETUNE:
        for prior in ("uniform", "clusters"):  # auto is one of them: its pick's result
            block = {"method": method, method: defaults[method], "floor": False, "size_prior": prior}
            run = finetune_run(vectors, labels, initial, k, block, seed)
            if "auto_chose" not in row:
                auto = dataclasses.replace(run, params=run.params.model_copy(update={"size_prior": "auto"}))
                row["auto_chose"] = size_prior(auto)[1]
            started = time.perf_counter()
            clusters = METHODS[method].run(run).clusters
            row[f"{method}/{prior}"] = {
                "acc": round(clustering_accuracy(labels, clusters), 4),
                "classes_kept": classes_kept(labels, clusters),
                "seconds": round(time.perf_counter() - started, 1),
            }
            if prior == row["auto_chose"]["size_prior"]:
                candidates[method] = (row[f"{method}/{prior}"]["acc"], judged(referee, clusters))
            print(f"    {method} {prior}: {row[f'{method}/{prior}']}", flush=True)
        row[f"{method}/auto"] = row[f"{method}/{row['auto_chose']['size_prior']}"]
        for ratio in long_tail:
            block = {"method": method, method: defaults[method], "floor": False, "size_prior": "long_tail"}
            block["imbalance_ratio"] = ratio
            clusters = METHODS[method].run(finetune_run(vectors, labels, initial, k, block, seed)).clusters
            row[f"{method}/long_tail:{ratio:g}"] = {
                "acc": round(clustering_accuracy(labels, clusters), 4),
                "classes_kept": classes_kept(labels, clusters),
            }
            print(f"    {method} long_tail {ratio:g}: {row[f'{method}/long_tail:{ratio:g}']}", flush=True)
    best = max(acc for acc, _ in candidates.values())
    row["method_auto"] = {}
    for score in SCORES:
        pick = max(candidates, key=lambda name: candidates[name][1][score])  # the first of equals, as auto
        row["method_auto"][score] = {
            "scores": {name: round(scores[score], 4) for name, (_, scores) in candidates.items()},
            "pick": pick,
            "regret": round(best - candidates[pick][0], 4),
        }
    row["floor"] = {score: floored(candidates, score) for score in SCORES}
    return row


def floored(candidates: dict[str, tuple[float, dict]], score: str) -> dict[str, float]:
    """``finetune.floor`` judging by ``score``: each method's ACC after it, the cluster stage's (``none``)
    where the method's clustering scores below the cluster stage's."""
    start_acc, start_scores = candidates["none"]
    return {
        name: start_acc if below_floor(scores[score], start_scores[score]) else acc
        for name, (acc, scores) in candidates.items()
        if name != "none"
    }


def judged(referee: Referee, clusters: np.ndarray) -> dict[str, float]:
    """Each score ``finetune.auto.score`` can take, of one clustering of the case."""
    neighbour, linear = referee.judge(clusters, "neighbour"), referee.judge(clusters, "linear")
    return {"neighbour": neighbour, "linear": linear, "both": (neighbour + linear) / 2}


def table(report: dict) -> str:
    lines = [
        "| data | case | seed | k-means ACC (classes kept) | auto chose (size CV) | "
        + " | ".join(f"{m} {p}" for m in FINETUNE for p in PRIORS)
        + " | method auto picks (regret), by "
        + ", ".join(SCORES)
        + " |",
        "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in FINETUNE for _ in PRIORS) + " | --- |",
    ]
    for row in report["cases"]:
        chose = row["auto_chose"]
        cells = [f"{row[f'{m}/{p}']['acc']:.3f} ({row[f'{m}/{p}']['classes_kept']})" for m in FINETUNE for p in PRIORS]
        auto = row.get("method_auto")  # cases measured before method auto's column have none
        picked = ", ".join(f"{auto[s]['pick']} ({auto[s]['regret']:.3f})" for s in SCORES) if auto else ""
        lines.append(
            f"| {row['data']} | {row['case']} | {row['seed']} | {row['kmeans_acc']:.3f} ({row['kmeans_classes_kept']}) "
            f"| {chose['size_prior']} ({chose['cluster_stage_size_cv']:.2f}) | " + " | ".join(cells) + f" | {picked} |"
        )
    return "\n".join(lines)


def long_tail_table(report: dict) -> str:
    """Per case measured with ``--long-tail``: each method with ``auto``'s prior and with ``long_tail`` at
    each ratio, ACC (classes kept)."""
    measured = [row for row in report["cases"] if any("/long_tail:" in key for key in row)]
    if not measured:
        return ""
    ratios = sorted({key.split(":")[1] for row in measured for key in row if "/long_tail:" in key}, key=float)
    columns = [(m, p) for m in FINETUNE for p in ("auto", *(f"long_tail:{r}" for r in ratios))]
    lines = [
        "| data | case | seed | k-means | " + " | ".join(f"{m} {p.replace(':', ' ')}" for m, p in columns) + " |",
        "| --- | --- | --- | --- | " + " | ".join("---" for _ in columns) + " |",
    ]
    for row in measured:
        cells = [
            f"{row[f'{m}/{p}']['acc']:.3f} ({row[f'{m}/{p}']['classes_kept']})" if f"{m}/{p}" in row else ""
            for m, p in columns
        ]
        start = f"{row['kmeans_acc']:.3f} ({row['kmeans_classes_kept']})"
        lines.append(f"| {row['data']} | {row['case']} | {row['seed']} | {start} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True, metavar="NAME=PROJECT")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--per-class", type=int, default=400, help="images per class of the balanced case (at most)")
    parser.add_argument("--long-tail", type=float, nargs="*", default=[], metavar="RATIO", help="imbalance ratios")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--docs", action="store_true", help=f"rewrite the table in {DOCS.relative_to(REPO)}")
    args = parser.parse_args(argv)
    report = json.loads(args.out.read_text()) if args.out.exists() else {"cases": []}  # other data and seeds kept
    for name, case, seed, vectors, labels, cluster_params in drawn_cases(args.data, args.seeds, args.per_class):
        row = run_case(vectors, labels, cluster_params, seed, tuple(args.long_tail))
        store_case(report, args.out, {"data": name, "case": case, "seed": seed, **row})
    if args.docs and args.long_tail:
        write_between_markers(DOCS, LONG_TAIL_BEGIN, LONG_TAIL_END, long_tail_table(report))
    elif args.docs:
        write_between_markers(DOCS, BEGIN, END, table(report))
    print(long_tail_table(report) if args.long_tail else table(report))


if __name__ == "__main__":
    main()
