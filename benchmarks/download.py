"""Wall time of the download stage on the real datasets in ../shared/datasets (no network needed).

Runs ``python -m stages.download`` as DVC would, once per dataset, into a temporary folder, and
writes ``{dataset: {seconds, samples, shape, skipped}}`` to ``--out``.
Usage: ``python benchmarks/download.py --out benchmarks/results/download.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
DATASETS = {
    "mnist": {"name": "mnist", "root": str(SHARED / "torchvision")},
    "fashion_mnist": {"name": "fashion_mnist", "root": str(SHARED / "torchvision")},
    "cifar10_jpeg_archive": {"name": "image_folder", "root": str(SHARED / "cifar10-jpeg.tar.gz")},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not SHARED.exists():
        sys.exit(f"{SHARED} not found")
    report = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        for label, data in DATASETS.items():
            params = yaml.safe_load((REPO / "params.yaml").read_text())
            params["data"].update(data, download_dir=f"{tmp}/raw")
            params_file = Path(tmp) / "params.yaml"
            params_file.write_text(yaml.safe_dump(params))
            started = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "stages.download",
                    "--params",
                    str(params_file),
                    "--out",
                    f"{tmp}/{label}",
                    "--metrics",
                    f"{tmp}/{label}.json",
                ],
                cwd=REPO,
                check=True,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
            seconds = round(time.perf_counter() - started, 2)
            meta = json.loads((Path(tmp) / label / "meta.json").read_text())
            report[label] = {
                "seconds": seconds,
                "samples": meta["num_samples"],
                "counts": meta["counts"],
                "shape": [meta["height"], meta["width"], meta["channels"]],
                "skipped": meta["skipped"],
            }
            print(label, report[label], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
