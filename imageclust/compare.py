"""``python -m imageclust compare [EXPERIMENT ...]``: chosen DVC experiments side by side.

Reads ``dvc exp show --json`` (run here, or a file saved from it with whatever options chose the
rows), keeps the named experiments (names or revision prefixes; none named: every experiment and
commit that has metrics, not the workspace) and writes, under ``--out``:

- ``comparison.csv`` and ``comparison.md``: one row per experiment with the params that differ
  between them, ACC, NMI and ARI of each scored source (``cluster``, ``finetune``) on ``--split``,
  and what it cost: each stage's seconds, the total and the largest peak memory;
- ``comparison.png``: ACC, NMI and ARI of ``--source`` as grouped bars.

A stage that an experiment took from DVC's cache reports the seconds of the run that made it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from .errors import UserError
from .io import atomic_path
from .preset import flatten

SCORES = ("acc", "nmi", "ari")
STAGES = ("download", "pretrain", "extract", "cluster", "finetune")
EVALUATE = "metrics/evaluate.json"


def experiment_show() -> list:
    """``dvc exp show --json`` in the current folder."""
    result = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"dvc exp show failed: {(result.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(result.stdout)


def _record(entry: dict, name: str | None) -> dict | None:
    data = entry.get("data") or {}
    metrics = {path: (m or {}).get("data") or {} for path, m in (data.get("metrics") or {}).items()}
    if not metrics:  # queued, running or failed
        return None
    params = flatten(((data.get("params") or {}).get("params.yaml") or {}).get("data") or {})
    return {"experiment": name or entry["rev"][:7], "rev": entry["rev"], "params": params, "metrics": metrics}


def records(show: list) -> list[dict]:
    """Every row of ``dvc exp show --json`` that has metrics: commits (and the workspace) and their
    experiments, in its order."""
    found = []
    for commit in show:
        name = "workspace" if commit.get("rev") == "workspace" else commit.get("name") or None
        found.append(_record(commit, name))
        for experiment in commit.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                found.append(_record(rev, rev.get("name") or experiment.get("name")))
    return [r for r in found if r is not None]


def choose(found: list[dict], wanted: list[str]) -> list[dict]:
    if not wanted:
        return [r for r in found if r["experiment"] != "workspace"]
    chosen = []
    for want in wanted:
        match = [r for r in found if want in (r["experiment"], r["rev"]) or r["rev"].startswith(want)]
        if not match:
            names = ", ".join(r["experiment"] for r in found) or "none"
            raise UserError(f"no experiment named {want!r} with metrics; there are: {names}")
        chosen.append(match[0])
    return chosen


def table(chosen: list[dict], split: str):
    """One row per experiment: the params that differ, scores of each source on ``split``, costs."""
    import pandas as pd

    keys = sorted({k for r in chosen for k in r["params"]})
    differing = [k for k in keys if len({json.dumps(r["params"].get(k), sort_keys=True) for r in chosen}) > 1]
    rows = []
    for r in chosen:
        row = {"experiment": r["experiment"]}
        row.update({k: r["params"].get(k) for k in differing})
        for source, splits in r["metrics"].get(EVALUATE, {}).items():
            scores = splits.get(split, {}) if isinstance(splits, dict) else {}
            row.update({f"{source} {s.upper()}": scores.get(s) for s in SCORES if s in scores})
        costs = {stage: r["metrics"].get(f"metrics/{stage}.json", {}).get("cost") or {} for stage in STAGES}
        row.update({f"{stage} s": c.get("seconds") for stage, c in costs.items()})
        seconds = [c["seconds"] for c in costs.values() if "seconds" in c]
        peaks = [c["peak_memory_mib"] for c in costs.values() if "peak_memory_mib" in c]
        row["total s"] = round(sum(seconds), 2) if seconds else None
        row["peak MiB"] = max(peaks) if peaks else None
        rows.append(row)
    return pd.DataFrame(rows).set_index("experiment")


def bar_chart(frame, source: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [f"{source} {s.upper()}" for s in SCORES if f"{source} {s.upper()}" in frame]
    if not columns:
        found = sorted({c.rsplit(" ", 1)[0] for c in frame.columns if c.endswith(" ACC")})
        raise UserError(
            f"--source {source}: no such scores in {EVALUATE} of the chosen experiments "
            f"(there: {', '.join(found) or 'none'})"
        )
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(frame) + 2), 3.6))
    frame[columns].astype(float).rename(columns=lambda c: c.split()[-1]).plot.bar(ax=ax, rot=30, width=0.8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(source)
    ax.legend(loc="lower right")
    for bars in ax.containers:
        ax.bar_label(bars, fmt="%.3f", fontsize=6, padding=1)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m imageclust compare",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("experiments", nargs="*", help="experiment names or revisions (default: all)")
    parser.add_argument("--json", type=Path, help="saved `dvc exp show --json` output (default: run it here)")
    parser.add_argument("--out", type=Path, default=Path("comparison"), help="folder to write (default: comparison)")
    parser.add_argument("--split", default="all", help="the evaluate stage's split to compare (default: all)")
    parser.add_argument("--source", default="finetune", help="assignments charted: finetune (default) or cluster")
    args = parser.parse_args(argv)
    try:
        if args.json is not None and not args.json.is_file():
            raise UserError(f"--json {args.json}: not found")
        show = json.loads(args.json.read_text()) if args.json else experiment_show()
        chosen = choose(records(show), args.experiments)
        if not chosen:
            raise UserError("no experiment with metrics to compare; run some (dvc exp run) first")
        frame = table(chosen, args.split)
        args.out.mkdir(parents=True, exist_ok=True)
        bar_chart(frame, args.source, args.out / "comparison.png")
    except (UserError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with atomic_path(args.out / "comparison.csv") as tmp:
        frame.to_csv(tmp)
    with atomic_path(args.out / "comparison.md") as tmp:
        tmp.write_text(frame.to_markdown(floatfmt=".4g") + "\n")
    print(frame.to_markdown(floatfmt=".4g"))
    return 0
