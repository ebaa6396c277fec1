"""Quality and speed of the default pipeline on scikit-learn's digits, against raw-pixel baselines.

Runs in a fresh clone of the repository's HEAD (so it measures committed code):
1. ``dvc repro`` stage by stage with the default params.yaml, timing each stage;
2. a second ``dvc repro`` (nothing changed) and a forced rerun from scratch, to check the results repeat;
3. experiments on raw pixels: k-means (plain, as in the literature, and L2-normalised), each with the
   default fine-tuning (`finetune.method: auto`).
Writes a JSON report (``--out``). Usage: ``python benchmarks/digits.py --out benchmarks/results/digits.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.common import stages_through  # noqa: E402

STAGES = stages_through("plot")
# Each experiment starts from the previous one's workspace, so every key that differs is set.
BASELINES = {
    "pixels_kmeans_raw": ["extract.backbone=pixels", "cluster.l2_normalize=false"],
    "pixels_kmeans_l2": ["extract.backbone=pixels", "cluster.l2_normalize=true"],
}


def sh(cwd: Path, *cmd: str) -> float:
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@localhost",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@localhost",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return round(time.perf_counter() - started, 2)


def scores(project: Path) -> dict:
    """ACC, NMI and ARI per source and split, and the fine-tuning method that made them (``auto``'s pick)."""
    evaluate = json.loads((project / "metrics/evaluate.json").read_text())
    finetune = json.loads((project / "metrics/finetune.json").read_text())
    return {
        **{
            source: {
                split: {k: round(v, 4) for k, v in values.items() if k in ("acc", "nmi", "ari")}
                for split, values in splits.items()
            }
            for source, splits in evaluate.items()
        },
        "finetune_method": finetune.get("chosen", finetune["method"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    report: dict = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    }
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        subprocess.run(["git", "clone", "-q", str(REPO), str(project)], check=True)
        report["commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True
        ).stdout.strip()
        report["stage_seconds"] = {stage: sh(project, "dvc", "repro", "--single-item", stage) for stage in STAGES}
        report["repro_seconds"] = round(sum(report["stage_seconds"].values()), 2)
        report["default"] = scores(project)
        report["noop_repro_seconds"] = sh(project, "dvc", "repro")
        shutil.rmtree(project / "artifacts/pretrain/checkpoints")  # else pretrain resumes at its last epoch
        sh(project, "dvc", "repro", "--force")
        report["repeat_identical"] = scores(project) == report["default"]
        for name, overrides in BASELINES.items():
            sh(project, "dvc", "exp", "run", *[arg for o in overrides for arg in ("-S", o)])
            report[name] = scores(project)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
