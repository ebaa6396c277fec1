"""The validation suite of ``cluster.k: auto``: cases with known answers built from the features of
real datasets, every K criterion run on each, and a table of what each picks.

Per dataset (a project whose extract stage ran, clustered as its ``params.yaml`` says: transform,
method), seven cases: 3, 5 and 7 classes drawn at random, all 10, all 10 with the two closest pairs
of classes merged (8), and 10 and 5 classes whose sizes fall geometrically 10:1. Each case holds at
most ``--case-size`` images. For each criterion: its pick, the right K, and k-means' ACC at both.
Labels build the cases and score them; no criterion reads one.

Usage: ``python benchmarks/choose_k.py --data digits=/tmp/bq/digits-seed0 --data
cifar10=/tmp/exp/lite:efficientnet_lite0_160 --out benchmarks/results/choose_k.json`` (``:SPACE``
takes the features of ``artifacts/spaces/SPACE``); ``--docs`` rewrites the table in docs/results.md;
``--combine`` scores pairs and triples of the criteria from the curves ``--out`` already holds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.common import write_between_markers  # noqa: E402
from imageclust.clustering.choose_k import BEST, AutoKParams, choose_k  # noqa: E402
from imageclust.clustering.params import ClusterParams  # noqa: E402
from imageclust.clustering.preprocess import FeatureTransform, l2_normalize  # noqa: E402
from imageclust.clustering.registry import METHODS  # noqa: E402
from imageclust.config import load_params  # noqa: E402
from imageclust.metrics import clustering_accuracy  # noqa: E402
from imageclust.tables import read_features  # noqa: E402

CRITERIA = ("silhouette", "silhouette_umap", "eigengap", "prediction_strength", "stability", "generalisation")
RESULTS = REPO / "docs" / "results.md"
BEGIN, END = "<!-- choose_k:begin -->", "<!-- choose_k:end -->"


@dataclass
class Case:
    name: str
    rows: np.ndarray  # indices into the dataset's labelled rows
    labels: np.ndarray  # the case's classes, renumbered 0..K-1 (merged pairs share one)
    imbalanced: bool

    @property
    def k(self) -> int:
        return len(np.unique(self.labels))


def _draw(labels: np.ndarray, classes, sizes, rng) -> np.ndarray:
    return np.concatenate(
        [
            rng.choice(np.flatnonzero(labels == c), min(size, int((labels == c).sum())), replace=False)
            for c, size in zip(classes, sizes)
        ]
    )


def _case(name: str, labels: np.ndarray, rows: np.ndarray, imbalanced: bool = False, merge: dict | None = None) -> Case:
    merged = np.array([merge.get(int(c), int(c)) for c in labels[rows]]) if merge else labels[rows]
    return Case(name, rows, np.unique(merged, return_inverse=True)[1], imbalanced)


def build_cases(vectors: np.ndarray, labels: np.ndarray, case_size: int, seed: int) -> list[Case]:
    """The seven cases of one dataset, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    cases = []
    for n in (3, 5, 7, len(classes)):
        chosen = np.sort(rng.choice(classes, n, replace=False))
        cases.append(_case(f"{n} classes", labels, _draw(labels, chosen, [case_size // n] * n, rng)))
    # merged: the two pairs of classes whose mean features are closest, each pair one class
    unit = l2_normalize(vectors)
    means = l2_normalize(np.stack([unit[labels == c].mean(0) for c in classes]))
    similarity = means @ means.T - 2 * np.eye(len(classes))
    merge: dict[int, int] = {}
    for flat in np.argsort(-similarity, axis=None):
        a, b = np.unravel_index(flat, similarity.shape)
        if a < b and a not in merge and b not in merge and not ({int(a), int(b)} & set(merge.values())):
            merge[int(classes[b])] = int(classes[a])
            if len(merge) == 2:
                break
    rows = _draw(labels, classes, [case_size // len(classes)] * len(classes), rng)
    pairs = " and ".join(f"{b}+{a}" for b, a in merge.items())
    cases.append(_case(f"10 classes, {pairs} merged", labels, rows, merge=merge))
    for n in (len(classes), 5):
        chosen = rng.permutation(rng.choice(classes, n, replace=False))
        shares = 10.0 ** (-np.arange(n) / (n - 1))  # the largest 10x the smallest
        available = np.array([(labels == c).sum() for c in chosen])
        scale = min(case_size / shares.sum(), float((available / shares).min()))  # every class can fill its size
        sizes = np.maximum(np.floor(scale * shares).astype(int), 1)
        cases.append(_case(f"{n} classes, sizes 10:1", labels, _draw(labels, chosen, sizes, rng), imbalanced=True))
    return cases


def run_case(vectors: np.ndarray, case: Case, params: ClusterParams, criteria, max_k: int, seed: int) -> dict:
    method = METHODS[params.method]
    _, x = FeatureTransform.fit(vectors[case.rows], params, seed)
    auto = AutoKParams(min_k=2, max_k=max_k, max_samples=len(x))

    def acc(k: int) -> float:
        model = method.fit(x, k, params.block, seed)
        clusters = model.fit_labels if model.fit_labels is not None else model.predict(x)[0]
        return round(clustering_accuracy(case.labels, clusters), 4)

    accs = {case.k: acc(case.k)}
    picks = {}
    for criterion in criteria:
        started = time.perf_counter()
        k, curve, _ = choose_k(x, auto, method, params.block, seed, criterion=criterion)
        if k not in accs:
            accs[k] = acc(k)
        picks[criterion] = {
            "k": k,
            "acc": accs[k],
            "seconds": round(time.perf_counter() - started, 1),
            "curve": {str(key): round(v, 4) for key, v in curve.items()},
        }
        print(f"  {case.name}: {criterion} -> {k} (true {case.k})", flush=True)
    return {
        "case": case.name,
        "true_k": case.k,
        "n": len(case.rows),
        "imbalanced": case.imbalanced,
        "acc_at_true_k": accs[case.k],
        "picks": picks,
    }


def summary(cases: list[dict], criteria) -> dict:
    """Per criterion: the share of cases it gets right, within one, and the ACC it loses on average."""
    out = {}
    for criterion in criteria:
        picks = [(c["picks"][criterion], c) for c in cases if criterion in c["picks"]]
        if not picks:
            continue
        off = np.array([abs(p["k"] - c["true_k"]) for p, c in picks])
        loss = np.array([c["acc_at_true_k"] - p["acc"] for p, c in picks])
        out[criterion] = {
            "cases": len(picks),
            "right": round(float((off == 0).mean()), 3),
            "within_one": round(float((off <= 1).mean()), 3),
            "mean_acc_loss": round(float(loss.mean()), 4),
            "worst_acc_loss": round(float(loss.max()), 4),
            "seconds_per_case": round(float(np.mean([p["seconds"] for p, _ in picks])), 1),
        }
    return out


def combined_pick(case: dict, criteria, rule: str) -> int:
    """The K several criteria choose together, from the curves stored for ``case``: ``mean`` takes the K
    whose curves, each rescaled to [0, 1] with its best at 1, have the highest sum (ties to the larger K);
    ``median`` the median of their picks (the lower middle one of an even number)."""
    if rule == "median":
        return int(sorted(case["picks"][c]["k"] for c in criteria)[(len(criteria) - 1) // 2])
    total: dict[int, float] = {}
    for criterion in criteria:
        curve = {int(k): v for k, v in case["picks"][criterion]["curve"].items()}
        if BEST[criterion] == "min":
            curve = {k: -v for k, v in curve.items()}
        low, high = min(curve.values()), max(curve.values())
        for k, v in curve.items():
            total[k] = total.get(k, 0.0) + (v - low) / max(high - low, 1e-12)
    return max(total, key=lambda k: (round(total[k], 9), k))


def combinations(report: dict, criteria, sizes=(2, 3)) -> list[dict]:
    """Every pair and triple of ``criteria`` under both rules of ``combined_pick``, scored on the stored
    cases: the share right and within one."""
    cases = [c for cs in report["datasets"].values() for c in cs]
    rows = []
    for size in sizes:
        for combo in itertools.combinations(criteria, size):
            for rule in ("mean", "median"):
                off = np.array([abs(combined_pick(c, combo, rule) - c["true_k"]) for c in cases])
                rows.append(
                    {
                        "criteria": list(combo),
                        "rule": rule,
                        "right": round(float((off == 0).mean()), 3),
                        "within_one": round(float((off <= 1).mean()), 3),
                    }
                )
    return sorted(rows, key=lambda r: (-r["right"], -r["within_one"]))


def table(report: dict) -> str:
    criteria = [c for c in CRITERIA if c in report["summary"]]
    lines = [
        "| criterion | right | within one | mean ACC lost | worst ACC lost | seconds per case |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for c in criteria:
        s = report["summary"][c]
        lines.append(
            f"| `{c}` | {s['right']:.0%} | {s['within_one']:.0%} | {s['mean_acc_loss']:.3f} | "
            f"{s['worst_acc_loss']:.3f} | {s['seconds_per_case']} |"
        )
    lines += ["", "| dataset | case | true K | ACC at true K | " + " | ".join(criteria) + " |"]
    lines.append("| --- | --- | --- | --- | " + " | ".join("---" for _ in criteria) + " |")
    for dataset, cases in report["datasets"].items():
        for c in cases:
            picks = " | ".join(
                f"{'**' if c['picks'][k]['k'] == c['true_k'] else ''}{c['picks'][k]['k']}"
                f"{'**' if c['picks'][k]['k'] == c['true_k'] else ''} ({c['picks'][k]['acc']:.3f})"
                for k in criteria
            )
            lines.append(f"| {dataset} | {c['case']} | {c['true_k']} | {c['acc_at_true_k']:.3f} | {picks} |")
    return "\n".join(lines)


def load(source: str) -> tuple[np.ndarray, np.ndarray, ClusterParams]:
    project, _, space = source.partition(":")
    features = Path(project) / "artifacts" / ("spaces/" + space if space else "features")
    _, params = load_params(ClusterParams, path=Path(project) / "params.yaml")
    table_ = read_features(features)
    labelled = table_.labels >= 0
    return table_.vectors[labelled], table_.labels[labelled], params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", default=[], metavar="NAME=PROJECT[:SPACE]")
    parser.add_argument(
        "--combine", action="store_true", help="score pairs and triples of the criteria from --out's stored curves"
    )
    parser.add_argument("--criteria", nargs="+", default=list(CRITERIA), choices=CRITERIA)
    parser.add_argument("--case-size", type=int, default=2000)
    parser.add_argument("--max-k", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--docs", action="store_true", help="rewrite the table in docs/results.md")
    args = parser.parse_args(argv)
    if not args.data and not args.combine:
        parser.error("give --data, or --combine to score combinations of the criteria already run")
    report = json.loads(args.out.read_text()) if args.out.exists() else {"datasets": {}}
    if args.combine and not report["datasets"]:
        parser.error(f"--combine: {args.out} holds no cases")
    for item in args.data:
        name, sep, source = item.partition("=")
        if not sep:
            parser.error(f"--data {item!r}: expected NAME=PROJECT[:SPACE]")
        vectors, labels, params = load(source)
        seed = args.seed + zlib.crc32(name.encode()) % 1000
        print(f"{name}: {len(labels)} labelled rows, {params.method}", flush=True)
        cases = build_cases(vectors, labels, args.case_size, seed)
        report["datasets"][name] = [
            {**run_case(vectors, case, params, args.criteria, args.max_k, seed), "source": source} for case in cases
        ]
        report["summary"] = summary([c for cs in report["datasets"].values() for c in cs], CRITERIA)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    if args.combine:  # the criteria every stored case ran, but the eigengap (never right)
        ran = [
            c
            for c in CRITERIA
            if c != "eigengap" and all(c in x["picks"] for xs in report["datasets"].values() for x in xs)
        ]
        report["combinations"] = combinations(report, ran)
        args.out.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
        for row in report["combinations"][:5]:
            print(json.dumps(row))
    if args.docs:
        write_between_markers(RESULTS, BEGIN, END, table(report))
    print(json.dumps(report["summary"], indent=1))


if __name__ == "__main__":
    main()
