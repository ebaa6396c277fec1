"""Curves: the training losses DVCLive logged, and the label-free score of every candidate K."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..errors import DataError
from .common import plot_note, save_figure

log = logging.getLogger(__name__)


def plot_k_curve(csv_path: str | Path, path: str | Path) -> None:
    """The label-free score of every candidate K (``cluster.k: auto``), the chosen one marked."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise DataError(f"{csv_path}: no candidate K")
    ks = np.array([int(r["k"]) for r in rows])
    scores = np.array([float(r["score"]) for r in rows])
    chosen = np.array([r["chosen"] == "1" for r in rows])
    fig = Figure(figsize=(6.0, 3.8), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(ks, scores, marker="o")
    ax.plot(
        ks[chosen],
        scores[chosen],
        marker="*",
        markersize=16,
        linestyle="none",
        color="tab:red",
        label=f"chosen: K={ks[chosen][0]}" if chosen.any() else None,
    )
    ax.set_xlabel("K")
    ax.set_ylabel(rows[0]["criterion"])
    ax.set_title("choice of K without labels")
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    if chosen.any():
        ax.legend()
    save_figure(fig, path)


def read_curve(path: str | Path) -> tuple[str, np.ndarray, np.ndarray]:
    """Read one DVCLive metric history (TSV: [timestamp,] step, <metric>): ``(metric name, steps, values)``."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        value_columns = [c for c in reader.fieldnames or [] if c not in ("step", "timestamp")]
        if "step" not in (reader.fieldnames or []) or len(value_columns) != 1:
            raise DataError(f"{path}: not a DVCLive metric file (header {reader.fieldnames})")
        rows = [(int(r["step"]), float(r[value_columns[0]])) for r in reader if r.get(value_columns[0])]
    steps, values = zip(*rows) if rows else ((), ())
    return value_columns[0], np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64)


def find_losses(live_dirs: dict[str, Path]) -> dict[str, Path]:
    """Every loss a stage's DVCLive folder holds (``plots/metrics/**/loss.tsv``), named by the stage
    and the metric's folder (``finetune scan/loss``): a new method's curves need no line anywhere."""
    found = {}
    for stage, live in live_dirs.items():
        metrics = Path(live) / "plots" / "metrics"
        if not metrics.is_dir():
            log.info("training curves of %s: %s holds none", stage, live)
            continue
        for tsv in sorted(metrics.rglob("loss.tsv")):
            found[f"{stage} {tsv.relative_to(metrics).with_suffix('').as_posix()}"] = tsv
    return found


def plot_training_curves(curves: dict[str, Path], path: str | Path) -> None:
    """One panel per curve (``name -> DVCLive TSV``); a note when there is none."""
    present = {}
    for name, curve_path in curves.items():
        if Path(curve_path).is_file():
            present[name] = read_curve(curve_path)
        else:  # a stage that trained nothing (pretraining skipped, finetune.method none)
            log.warning("training curve %s: %s not found", name, curve_path)
    if not present:
        plot_note("no training curves", path)
        return
    n_cols = min(len(present), 3)
    n_rows = math.ceil(len(present) / n_cols)
    fig = Figure(figsize=(5.0 * n_cols, 3.8 * n_rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(n_rows, n_cols)).ravel()
    for ax, (name, (metric, steps, values)) in zip(axes, present.items()):
        ax.plot(steps, values, marker="." if len(steps) < 50 else None)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    for ax in axes[len(present) :]:
        ax.set_axis_off()
    save_figure(fig, path)
