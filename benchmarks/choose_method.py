"""Which fine-tuning method to keep, without labels: every candidate method on a project's features,
as its finetune stage runs them (``run_finetune``), each judged by the label-free scores a run could
choose by, and scored with the labels for this table only. For each dataset: every method's ACC and
scores, each selector's pick, and its regret (the best ACC in hindsight minus the pick's).

Selectors: ``neighbour`` (``labelfree.neighbour_kappa`` in the extract stage's features, what the
guards use), ``linear`` (TURTLE's generalisation score, chance-corrected) and ``both``, their mean;
and ``referees``, the neighbour score averaged over the project's referee spaces (``extract.referees``,
in its extract_spaces stage's folder), where it has any.

Usage: ``python benchmarks/choose_method.py --run digits=/tmp/bq/digits-seed0 --run
cifar10=/tmp/exp/cifar:test --out benchmarks/results/choose_method.json [--docs]``: each project's
extract and cluster stages have run; ``:SPLIT`` is the split scored (default: every row).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.common import project_run, write_between_markers  # noqa: E402
from imageclust.config import GlobalParams, load_section  # noqa: E402
from imageclust.finetune.guard import FLOOR_SCORE, Referee, below_floor  # noqa: E402
from imageclust.finetune.params import FinetuneParams  # noqa: E402
from imageclust.finetune.stage import referee_spaces, run_finetune  # noqa: E402
from imageclust.metrics import clustering_accuracy  # noqa: E402
from imageclust.paths import artifact_paths  # noqa: E402
from imageclust.tables import read_assignments, read_features, read_spaces  # noqa: E402

METHODS = ("none", "scan", "temi", "turtle")
SELECTORS = ("neighbour", "linear", "both", "referees")  # referees: where the project has them
DOCS = REPO / "docs" / "results.md"


def run_methods(project: Path, split: str | None, methods: tuple[str, ...], seed: int) -> dict:
    """Every method on the project's features with this repository's default params for it."""
    paths = artifact_paths(project)
    raw = yaml.safe_load((project / "params.yaml").read_text())
    train_splits = raw["data"]["train_splits"]
    features = read_features(paths["features"])
    train = np.isin(features.splits, train_splits)
    spaces_dir = paths["spaces"] if paths["spaces"].is_dir() else None  # extract_spaces ran
    more = read_spaces(spaces_dir, features.ids) if spaces_dir else {}
    # as auto judges without referees: the mean over the extract stage's features and extract.spaces
    referee = Referee(features.vectors[train], seed, more_spaces=[t.vectors[train] for t in more.values()])
    referees = referee_spaces(spaces_dir, features.ids, train, seed)
    defaults = yaml.safe_load((REPO / "params.yaml").read_text())["finetune"]
    rows = {}
    for method in methods:
        block = {"method": method, method: defaults[method], "floor": False}  # each method as it is
        params = load_section(FinetuneParams, {"finetune": block})
        with tempfile.TemporaryDirectory(prefix="choose-method-") as tmp:
            started = time.perf_counter()
            run_finetune(
                paths["features"], paths["cluster"], Path(tmp) / "out", Path(tmp) / "live",
                GlobalParams(seed=seed, device="cpu"), train_splits, params,
                spaces_dir=spaces_dir,
            )  # fmt: skip
            seconds = time.perf_counter() - started
            a = read_assignments(Path(tmp) / "out" / "assignments.parquet")
        scored = a.splits == split if split else np.ones(len(a.ids), bool)
        clusters = a.clusters[train]
        rows[method] = {
            "acc": round(clustering_accuracy(a.labels[scored], a.clusters[scored]), 4),
            "neighbour": round(referee.score(clusters), 4),
            **({"neighbour_by_space": [round(v, 4) for v in referee.by_space(clusters, "neighbour")]} if more else {}),
            "linear": round(referee.linear(clusters), 4),
            "seconds": round(seconds, 1),
        }
        rows[method]["both"] = round((rows[method]["neighbour"] + rows[method]["linear"]) / 2, 4)
        if referees:  # as auto judges with extract.referees
            by_referee = {name: round(space.judge(a.clusters, "neighbour"), 4) for name, space in referees.items()}
            rows[method]["by_referee"] = by_referee
            rows[method]["referees"] = round(float(np.mean(list(by_referee.values()))), 4)
        print(project.name, method, rows[method], flush=True)
    return rows


def picks(rows: dict) -> dict:
    """Each selector's pick and its regret against the best ACC in hindsight; and ``finetune.floor``:
    each method's ACC after it (the cluster stage's, ``none``, where the method is judged worse by
    the floor's score) and how far below the cluster stage each ends with and without it."""
    best = max(r["acc"] for r in rows.values())
    out = {"best_acc": best}
    for selector in SELECTORS:
        if any(selector not in r for r in rows.values()):
            continue
        pick = max(rows, key=lambda m: rows[m][selector])
        out[selector] = {"pick": pick, "regret": round(best - rows[pick]["acc"], 4)}
    if "none" in rows:
        start = rows["none"]
        floored = {
            m: start["acc"] if below_floor(r[FLOOR_SCORE], start[FLOOR_SCORE]) else r["acc"] for m, r in rows.items()
        }
        out["floor"] = {
            "acc": floored,
            "worst_below_cluster_stage": round(max(start["acc"] - r["acc"] for r in rows.values()), 4),
            "worst_below_cluster_stage_floored": round(max(start["acc"] - a for a in floored.values()), 4),
        }
    return out


def table(report: dict) -> str:
    """ACC / neighbour score / linear score of each method, and each selector's pick (regret)."""
    lines = [
        "| data | "
        + " | ".join(f"{m}: ACC / neighbour / linear" for m in METHODS)
        + " | "
        + " | ".join(f"{s} picks (regret)" for s in SELECTORS)
        + " |",
        "| --- " * (1 + len(METHODS) + len(SELECTORS)) + "|",
    ]
    for name, entry in report["datasets"].items():
        rows, chosen = entry["methods"], entry["picks"]
        cells = [
            f"{rows[m]['acc']:.3f} / {rows[m]['neighbour']:.3f} / {rows[m]['linear']:.3f}" if m in rows else "-"
            for m in METHODS
        ]
        choices = [f"{chosen[s]['pick']} ({chosen[s]['regret']:.3f})" if s in chosen else "-" for s in SELECTORS]
        lines.append(f"| {name} | " + " | ".join(cells + choices) + " |")
    summary = report["summary"]
    regrets = [
        f"{summary[s]['mean_regret']:.3f} ({summary[s]['worst_regret']:.3f}) of {summary[s]['datasets']}"
        if s in summary
        else "-"
        for s in SELECTORS
    ]
    lines.append("| mean regret (worst) | " + " | ".join([""] * len(METHODS) + regrets) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="NAME=PROJECT[:SPLIT]")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--docs", action="store_true", help=f"rewrite the table in {DOCS.name}")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    report = json.loads(args.out.read_text()) if args.out.exists() else {"datasets": {}}
    for spec in args.run:
        name, project, split = project_run(spec)
        rows = run_methods(Path(project), split, tuple(args.methods), args.seed)
        report["datasets"][name] = {"project": project, "split": split or "all", "methods": rows, "picks": picks(rows)}
        regrets = {
            s: [d["picks"][s]["regret"] for d in report["datasets"].values() if s in d["picks"]] for s in SELECTORS
        }
        report["summary"] = {
            s: {
                "mean_regret": round(float(np.mean(r)), 4),
                "worst_regret": round(float(np.max(r)), 4),
                "datasets": len(r),
            }
            for s, r in regrets.items()
            if r
        }
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    if args.docs:
        write_between_markers(DOCS, "<!-- choose_method:begin -->", "<!-- choose_method:end -->", table(report))


if __name__ == "__main__":
    main()
