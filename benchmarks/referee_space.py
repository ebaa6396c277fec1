"""Judging ``finetune.method: auto``'s candidates in spaces they were not fitted in.

The neighbour score favours the method that optimises something like it (SCAN trains on the
neighbours of the space it is judged in), and on small CIFAR-10 draws it picked TURTLE at a regret of
0.123 ("Choosing the method without labels", docs/results.md). Here the candidates (the cluster
stage's assignment, SCAN, TEMI and TURTLE with ``finetune.size_prior: auto``, this repository's
defaults) are fitted on a project's extract-stage features, as ``size_prior.py`` draws them (ten
classes balanced and 10:1, per seed), and each is scored by ``labelfree.neighbour_kappa`` in the fitted
space and in referee spaces: other frozen backbones or sides run on the draw's prepared pixels. Per
rule (the fitted space, as ``auto`` judges without ``extract.referees``; each referee space; with three
or more, the mean of each pair; the mean of all referee spaces, as ``auto`` judges with them), the pick
and its regret: the best candidate's ACC minus the pick's. Labels only score. The referees run through
the inference engine the extract stage would choose at FP32 (``extract.engine: auto``). ``--space``
gives TURTLE further spaces, as ``extract.spaces`` does (embedded like the referees); the fitted-space
rule then averages over every space the candidates were fitted in, as ``auto`` judges without referees.

Usage: ``python benchmarks/referee_space.py --data cifar10=PROJECT --referee efficientnet_lite2@160
--referee efficientnet_lite0@224 [--space efficientnet_lite0@160] [--seeds 0 1 2] [--per-class 150] --out
benchmarks/results/referee_space.json [--docs]``
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.common import head_commit, write_between_markers  # noqa: E402
from benchmarks.size_prior import cluster_stage, draw_pair, finetune_run  # noqa: E402
from imageclust.clustering.params import ClusterParams  # noqa: E402
from imageclust.config import load_params  # noqa: E402
from imageclust.data.prepared import load_prepared  # noqa: E402
from imageclust.features.embedder import Embedder  # noqa: E402
from imageclust.features.engines import default_cache_dir  # noqa: E402
from imageclust.features.params import ExtractParams  # noqa: E402
from imageclust.features.referees import embed_rows  # noqa: E402
from imageclust.features.registry import EXTRACTORS  # noqa: E402
from imageclust.finetune.registry import METHODS  # noqa: E402
from imageclust.labelfree import neighbour_kappa  # noqa: E402
from imageclust.metrics import clustering_accuracy  # noqa: E402
from imageclust.tables import read_features  # noqa: E402

FINETUNE = ("scan", "temi", "turtle")
FITTED = "fitted space"
REFEREES = "referee spaces' mean"
DOCS = REPO / "docs" / "results.md"
BEGIN, END = "<!-- referee_space:begin -->", "<!-- referee_space:end -->"


class Project:
    """A project's labelled extract-stage features and the prepared pixels of the same rows."""

    def __init__(self, folder: Path):
        table = read_features(folder / "artifacts" / "features")
        labelled = table.labels >= 0
        self.vectors, self.labels, self.ids = table.vectors[labelled], table.labels[labelled], table.ids[labelled]
        _, self.cluster_params = load_params(ClusterParams, path=folder / "params.yaml")
        self.prepared = load_prepared(folder / "data" / "prepared")
        position = {sample: n for n, sample in enumerate(self.prepared.ids)}
        self.pixel_rows = np.array([position[sample] for sample in self.ids])

    def embed(self, referee: str, rows: np.ndarray, batch: int = 64) -> np.ndarray:
        """The draw's images in the referee space ``BACKBONE@SIDE`` (``SIDE``: pixels, or ``native``)."""
        backbone, _, side = referee.partition("@")
        side = None if side in ("", "native") else int(side)
        params = ExtractParams(backbone=backbone, image_size=side)
        built = EXTRACTORS[backbone].build(params.block, None)
        embedder = Embedder.for_extract(built, self.prepared.images.shape[1:4], params, torch.device("cpu"))
        in_order = np.sort(self.pixel_rows[rows])  # the prepared images' order, read in batches
        sample = torch.from_numpy(np.ascontiguousarray(self.prepared.images[in_order[:batch]]))
        embedder.use_engine(sample, "auto", "fp32", default_cache_dir(), len(rows))
        order = np.argsort(np.argsort(self.pixel_rows[rows]))  # back to the draw's order
        return embed_rows(embedder, self.prepared, in_order, batch, referee)[order]


def candidates(
    project: Project, rows: np.ndarray, labels: np.ndarray, seed: int, more_spaces: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """``auto``'s candidates on the draw, fitted on the project's features (TURTLE on ``more_spaces`` too)."""
    vectors = project.vectors[rows]
    k, initial = cluster_stage(vectors, labels, project.cluster_params, seed)
    defaults = yaml.safe_load((REPO / "params.yaml").read_text())["finetune"]
    fitted = {"none": initial}
    for method in FINETUNE:
        block = {"method": method, method: defaults[method], "floor": False, "size_prior": "auto"}
        run = finetune_run(vectors, labels, initial, k, block, seed)
        if METHODS[method].uses_spaces:
            run = dataclasses.replace(run, more_spaces=more_spaces)
        fitted[method] = METHODS[method].run(run).clusters
    return fitted


def picks(acc: dict[str, float], scores: dict[str, dict[str, float]]) -> dict[str, dict]:
    """Per rule, the candidate it picks and the regret."""
    referees = [space for space in scores if space != FITTED]
    pairs = list(itertools.combinations(referees, 2)) if len(referees) > 2 else []
    rules = {
        **scores,
        **{" + ".join(pair): {m: float(np.mean([scores[s][m] for s in pair])) for m in acc} for pair in pairs},
        REFEREES: {m: float(np.mean([scores[s][m] for s in referees])) for m in acc},
    }
    best = max(acc.values())
    out = {}
    for rule, by_method in rules.items():
        pick = max(by_method, key=by_method.get)
        out[rule] = {"pick": pick, "regret": round(best - acc[pick], 4)}
    return out


def run_case(project: Project, rows: np.ndarray, referees: list[str], seed: int, more: list[str] = ()) -> dict:
    labels = np.unique(project.labels[rows], return_inverse=True)[1]
    started = time.perf_counter()
    more_spaces = {space: project.embed(space, rows) for space in more}
    fitted = candidates(project, rows, labels, seed, more_spaces)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    spaces = {referee: project.embed(referee, rows) for referee in referees}
    embed_seconds = time.perf_counter() - started
    acc = {m: round(clustering_accuracy(labels, c), 4) for m, c in fitted.items()}

    def scored(z: np.ndarray) -> dict[str, float]:
        return {m: round(neighbour_kappa(z, c, seed=seed), 4) for m, c in fitted.items()}

    in_fitted = [scored(z) for z in (project.vectors[rows], *more_spaces.values())]
    scores = {FITTED: {m: round(float(np.mean([s[m] for s in in_fitted])), 4) for m in fitted}}
    scores.update({space: scored(z) for space, z in spaces.items()})
    return {
        "n": len(rows),
        "acc": acc,
        "scores": scores,
        "picks": picks(acc, scores),
        "seconds": {"candidates": round(fit_seconds, 1), "referee_embedding": round(embed_seconds, 1)},
    }


def summary(cases: list[dict]) -> dict[str, dict]:
    rules = cases[0]["picks"] if cases else {}
    return {
        rule: {
            "mean_regret": round(float(np.mean([c["picks"][rule]["regret"] for c in cases])), 4),
            "worst_regret": round(float(max(c["picks"][rule]["regret"] for c in cases)), 4),
        }
        for rule in rules
    }


def table(report: dict) -> str:
    cases = report["cases"]
    rules = list(cases[0]["picks"]) if cases else []
    lines = [
        "| data | case | seed | ACC: " + ", ".join(("none", *FINETUNE)) + " | " + " | ".join(rules) + " |",
        "| --- | --- | --- | --- | " + " | ".join("---" for _ in rules) + " |",
    ]
    for c in cases:
        accs = " / ".join(f"{c['acc'][m]:.3f}" for m in ("none", *FINETUNE))
        cells = " | ".join(f"{c['picks'][r]['pick']} ({c['picks'][r]['regret']:.3f})" for r in rules)
        lines.append(f"| {c['data']} | {c['case']} | {c['seed']} | {accs} | {cells} |")
    per_rule = report["summary"]
    lines.append(
        "| mean regret (worst) | | | | "
        + " | ".join(f"{per_rule[r]['mean_regret']:.3f} ({per_rule[r]['worst_regret']:.3f})" for r in rules)
        + " |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True, metavar="NAME=PROJECT")
    parser.add_argument("--referee", action="append", required=True, metavar="BACKBONE@SIDE")
    parser.add_argument("--space", action="append", default=[], metavar="BACKBONE@SIDE", help="TURTLE's further space")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--per-class", type=int, default=150)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--docs", action="store_true", help="rewrite the table in docs/results.md")
    args = parser.parse_args(argv)
    report = {"commit": head_commit(), "referees": args.referee, "spaces": args.space, "cases": []}
    for item in args.data:
        name, sep, folder = item.partition("=")
        if not sep:
            parser.error(f"--data {item!r}: expected NAME=PROJECT")
        project = Project(Path(folder))
        per_class = min(args.per_class, int(np.bincount(project.labels).min()))
        for seed in args.seeds:
            for case, rows in draw_pair(project.labels, per_class, seed).items():
                row = {
                    "data": name,
                    "case": case,
                    "seed": seed,
                    **run_case(project, rows, args.referee, seed, args.space),
                }
                print(json.dumps(row), flush=True)
                report["cases"].append(row)
                report["summary"] = summary(report["cases"])
                args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    if args.docs:
        write_between_markers(DOCS, BEGIN, END, table(report))


if __name__ == "__main__":
    main()
