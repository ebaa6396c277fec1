"""``finetune.auto.screen_rows``: does judging the candidates on a sample of the training rows pick what
judging them on every row picks, and what does it save? ``finetune.method: auto`` runs as the finetune
stage runs it (``run_finetune``) on a kept project's features and cluster stage, once per screen size
(``none``: no screen, every candidate on every row); each run's pick, every candidate's score, its
seconds and its ACC (the labels score the table only).

Usage: ``python benchmarks/auto_screen.py --run fashion_mnist=/tmp/s/work/fashion_mnist-seed2
--screen-rows 3000 10000 none --out benchmarks/results/auto_screen.json [--docs]``; ``:SPLIT`` after
the project is the split scored (default: every row). Runs of one project can share the cores with
another's: compare seconds within one such batch.
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
from benchmarks.common import head_commit, project_run, write_between_markers  # noqa: E402
from imageclust.config import GlobalParams, load_section  # noqa: E402
from imageclust.finetune.params import FinetuneParams  # noqa: E402
from imageclust.finetune.stage import run_finetune  # noqa: E402
from imageclust.metrics import clustering_accuracy  # noqa: E402
from imageclust.paths import artifact_paths  # noqa: E402
from imageclust.tables import read_assignments  # noqa: E402

CANDIDATES = ["none", "scan", "temi", "turtle"]
DOCS = REPO / "docs" / "results.md"


def run_auto(project: Path, split: str | None, screen_rows: int | None, seed: int, candidates: list[str]) -> dict:
    """``auto`` over the candidates on the project's features, screened on ``screen_rows`` rows."""
    paths = artifact_paths(project)
    raw = yaml.safe_load((project / "params.yaml").read_text())
    block = {"method": "auto", "auto": {"candidates": candidates, "screen_rows": screen_rows}}
    params = load_section(FinetuneParams, {"finetune": block})
    with tempfile.TemporaryDirectory(prefix="auto-screen-") as tmp:
        started = time.perf_counter()
        stats = run_finetune(
            paths["features"], paths["cluster"], Path(tmp) / "out", Path(tmp) / "live",
            GlobalParams(seed=seed, device="cpu"), raw["data"]["train_splits"], params,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        a = read_assignments(Path(tmp) / "out" / "assignments.parquet")
    scored = a.splits == split if split else np.ones(len(a.ids), bool)
    return {
        "screen_rows": screen_rows,
        "train_rows": int(np.isin(a.splits, raw["data"]["train_splits"]).sum()),
        "chosen": stats["chosen"],
        "candidate_scores": stats["candidate_scores"],
        "seconds": round(seconds, 1),
        "acc": round(clustering_accuracy(a.labels[scored], a.clusters[scored]), 4),
        "commit": head_commit(),
    }


def table(report: dict) -> str:
    lines = [
        "| data | screen rows | chosen | ACC | seconds | " + " | ".join(f"{c} score" for c in CANDIDATES) + " |",
        "| --- " * (5 + len(CANDIDATES)) + "|",
    ]
    for name, runs in report["datasets"].items():
        for run in sorted(runs, key=lambda r: r["screen_rows"] or float("inf")):
            scores = [f"{run['candidate_scores'].get(c, float('nan')):.4f}" for c in CANDIDATES]
            rows = f"{run['screen_rows']:,}" if run["screen_rows"] else "all (no screen)"
            cells = [name, rows, run["chosen"], f"{run['acc']:.4f}", f"{run['seconds']:.0f}", *scores]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="NAME=PROJECT[:SPLIT]")
    parser.add_argument("--screen-rows", nargs="+", default=["10000", "none"], help="sizes, or none")
    parser.add_argument("--candidates", nargs="+", default=CANDIDATES)
    parser.add_argument("--seed", type=int, default=None, help="default: the project's params.yaml seed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--docs", action="store_true", help=f"rewrite the table in {DOCS.name}")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = json.loads(args.out.read_text()) if args.out.exists() else {"datasets": {}}
    for spec in args.run:
        name, project, split = project_run(spec)
        seed = args.seed
        if seed is None:
            seed = yaml.safe_load((Path(project) / "params.yaml").read_text())["seed"]
        for size in args.screen_rows:
            screen_rows = None if size == "none" else int(size)
            run = {
                "project": project,
                "seed": seed,
                **run_auto(Path(project), split, screen_rows, seed, args.candidates),
            }
            print(name, json.dumps(run), flush=True)
            runs = [r for r in report["datasets"].get(name, []) if r["screen_rows"] != screen_rows]
            report["datasets"][name] = [*runs, run]
            args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    if args.docs:
        write_between_markers(DOCS, "<!-- auto_screen:begin -->", "<!-- auto_screen:end -->", table(report))


if __name__ == "__main__":
    main()
