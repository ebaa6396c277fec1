"""What the end-to-end benchmarks share: a fresh clone of HEAD per run, params overrides, stages
timed through DVC, and the loop that runs named configurations and merges their results into one
JSON file."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TORCHVISION_ROOT = REPO.parent / "shared" / "datasets" / "torchvision"


def dvc_env() -> dict:
    """This Python's DVC, no analytics, and a git identity for the commits ``dvc exp`` makes."""
    return {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "b@b",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "b@b",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }


def clone(workdir: Path, name: str) -> Path:
    """A fresh clone of the repository's committed HEAD: what anyone reproducing the run gets."""
    project = workdir / name
    subprocess.run(["git", "clone", "-q", str(REPO), str(project)], check=True)
    return project


def head_commit(project: Path = REPO) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()


def evaluated_scores(project: Path, source: str, split: str = "all") -> dict:
    """ACC, NMI and ARI of one source (``cluster``, ``finetune``) and split from the evaluate stage's metrics."""
    evaluated = json.loads((project / "metrics/evaluate.json").read_text())[source][split]
    return {name: round(evaluated[name], 4) for name in ("acc", "nmi", "ari")}


def set_params(params_file: Path, overrides: dict) -> None:
    """Set dotted keys (``finetune.deepcluster.lr``) in a params file; an unknown key stops the run."""
    params = yaml.safe_load(params_file.read_text())
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        if leaf not in node:
            sys.exit(f"unknown params key {key}")
        node[leaf] = value
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))


def stages_through(last: str, dvc_yaml: Path = REPO / "dvc.yaml") -> list[str]:
    """``dvc.yaml``'s stages in its order (each after what it reads) up to and including ``last``: a
    benchmark that runs the pipeline stage by stage runs every stage a later one needs, also one
    added after the benchmark was written."""
    stages = list(yaml.safe_load(dvc_yaml.read_text())["stages"])
    return stages[: stages.index(last) + 1]


def timed_stage(project: Path, stage: str) -> dict:
    """``dvc repro --single-item stage`` under /usr/bin/time: wall seconds and the peak RSS of the
    largest process (the stage's python)."""
    started = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-f", "peak_kib=%M", "dvc", "repro", "--single-item", stage],
        cwd=project,
        env=dvc_env(),
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if result.returncode:
        sys.exit(f"{stage} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    peak = [line for line in result.stderr.splitlines() if line.startswith("peak_kib=")]
    # /usr/bin/time reports dvc's own process tree's largest member
    return {"seconds": round(seconds, 1), "peak_mib": round(int(peak[-1].split("=")[1]) / 1024) if peak else None}


def project_run(spec: str) -> tuple[str, str, str | None]:
    """``NAME=PROJECT[:SPLIT]`` (the ``--run`` of the benchmarks on a kept project) as its three parts;
    no split: None, every row scored."""
    name, _, target = spec.partition("=")
    project, _, split = target.partition(":")
    return name, project, split or None


def write_between_markers(page: Path, begin: str, end: str, text: str) -> None:
    """Replace what lies between the ``begin`` and ``end`` markers of ``page`` (a Markdown file) with ``text``."""
    content = page.read_text()
    if begin not in content or end not in content:
        sys.exit(f"{page}: the markers {begin} and {end} are missing")
    page.write_text(
        re.sub(f"{re.escape(begin)}.*?{re.escape(end)}", lambda _: f"{begin}\n{text}\n{end}", content, flags=re.S)
    )


def run_benchmarks(
    description: str, runs: dict[str, Callable[[Path], dict]], after_each: Callable[[dict], None] | None = None
) -> None:
    """The command line of a benchmark made of named runs: ``--runs`` (default all), ``--out`` (the
    JSON file each run's result is merged into as soon as it ends) and ``--workdir`` (keep clones).
    ``after_each`` gets the whole report after each run (to rewrite a table from it)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", nargs="+", choices=sorted(runs), default=sorted(runs))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, help="keep the clones here (default: a temporary folder)")
    args = parser.parse_args()
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    report["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in args.runs:
            report[name] = {"commit": head_commit(), **runs[name](workdir)}
            print(json.dumps({name: report[name]}, indent=2), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2) + "\n")
            if after_each is not None:
                after_each(report)
