"""The extract stage at scale, on this machine (no network needed):

- throughput of the stage against a bare ``torch.inference_mode()`` loop over the same model, batch
  size and already preprocessed tensors (EfficientNet-Lite0 at 160 px on real CIFAR-10 images);
- peak memory of the stage process at 10,000 and 60,000 images (raw pixels, 3,072-d vectors: if
  the stage held its vectors, 60,000 of them would add 700 MB);
- CIFAR-10 from the shared JPEG archive through EfficientNet-Lite0 features at two input sizes:
  k-means fitted on the 50,000 training images, ACC/NMI/ARI on the 10,000 test images, with times.

Usage: ``python benchmarks/extract.py --out benchmarks/results/extract.json [--parts throughput memory cifar10]``.
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

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ARCHIVE = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


def write_params(path: Path, **sections) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in sections.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def prepare_cifar10(tmp: Path) -> Path:
    from imageclust.data.params import DataParams
    from imageclust.data.stage import prepare

    out = tmp / "cifar10"
    started = time.perf_counter()
    prepare(DataParams(name="image_folder", root=str(ARCHIVE), download_dir=str(tmp / "raw")), 0, out)
    print(f"prepared CIFAR-10 in {time.perf_counter() - started:.1f}s", flush=True)
    return out


def _peak_rss_mib(pid: int) -> float | None:
    """The process's high-water resident memory (VmHWM), in MiB; None once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def run_stage(stage: str, params: Path, *args: str) -> tuple[float, float]:
    """Run ``python -m stages.<stage>`` as DVC would; return (seconds, peak resident MiB of that process).

    The peak is read from /proc while it runs (getrusage would report the benchmark's own size,
    which a child inherits across fork and exec)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", f"stages.{stage}", "--params", str(params), *map(str, args)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, _peak_rss_mib(proc.pid) or 0.0)
        time.sleep(0.05)
    if proc.returncode:
        raise SystemExit(f"stages.{stage} failed ({proc.returncode})")
    return time.perf_counter() - started, peak


def throughput(tmp: Path, cifar: Path, n: int = 4096, side: int = 160, repeats: int = 3) -> dict:
    """Stage throughput (``extract_features`` in-process, model build excluded) over a bare loop."""
    import torch

    from imageclust.config import GlobalParams
    from imageclust.data.prepared import RawDataset, load_prepared, write_prepared
    from imageclust.features.params import ExtractParams
    from imageclust.features.preprocess import Preprocess
    from imageclust.features.stage import extract_features
    from imageclust.models.efficientnet_lite import efficientnet_lite0

    full = load_prepared(cifar)
    rows = np.arange(n)
    subset = tmp / "subset"
    write_prepared(
        subset,
        RawDataset(
            name="cifar10",
            images=np.asarray(full.images[rows]),
            labels=full.labels[rows],
            splits=full.splits[rows],
            ids=full.ids[rows],
            classes=full.classes,
        ),
    )
    params = ExtractParams(backbone="efficientnet_lite0", image_size=side, batch_size=32)
    backbone = efficientnet_lite0(None)
    model = backbone.model.eval().to(memory_format=torch.channels_last)
    preprocess = Preprocess(3, 3, side, backbone.mean, backbone.std)
    with torch.inference_mode():
        batches = [
            preprocess(torch.from_numpy(np.asarray(full.images[s : s + 32]))).contiguous(
                memory_format=torch.channels_last
            )
            for s in range(0, n, 32)
        ]
    stage, bare = [], []
    for r in range(repeats):  # interleaved, so a noisy neighbour slows both alike
        with torch.inference_mode():
            started = time.perf_counter()
            for x in batches:
                model(x)
            bare.append(n / (time.perf_counter() - started))
        summary = extract_features(subset, None, tmp / f"f{r}", tmp / f"w{r}", GlobalParams(device="cpu"), params)
        stage.append(summary["images_per_second"])
        print(f"throughput run {r}: stage {stage[-1]:.1f} img/s, bare loop {bare[-1]:.1f} img/s", flush=True)
    return {
        "model": "efficientnet_lite0",
        "input_size": side,
        "batch_size": 32,
        "images": n,
        "stage_images_per_second": round(float(np.median(stage)), 1),
        "bare_loop_images_per_second": round(float(np.median(bare)), 1),
        "ratio": round(float(np.median(stage) / np.median(bare)), 3),
        "runs": {"stage": stage, "bare": bare},
    }


def memory(tmp: Path, sizes=(10_000, 60_000)) -> dict:
    from imageclust.data.prepared import RawDataset, write_prepared

    report = {}
    for n in sizes:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        prepared = tmp / f"random{n}"
        write_prepared(
            prepared,
            RawDataset(
                name="random",
                images=images,
                labels=rng.integers(0, 10, n),
                splits=np.array(["train"] * n),
                ids=np.array([f"r{i}" for i in range(n)]),
                classes=[str(c) for c in range(10)],
            ),
        )
        del images
        params = write_params(tmp / "params.yaml", extract={"backbone": "pixels", "shard_rows": 10_000})
        seconds, peak = run_stage(
            "extract",
            params,
            "--data",
            prepared,
            "--encoder",
            "none",
            "--out",
            tmp / f"mf{n}",
            "--work",
            tmp / f"mw{n}",
        )
        vectors_mib = n * 3072 * 4 / 2**20
        report[str(n)] = {
            "peak_rss_mib": round(peak, 1),
            "seconds": round(seconds, 2),
            "vectors_if_held_mib": round(vectors_mib, 1),
        }
        print(f"memory at {n}: peak {peak:.0f} MiB (the vectors alone would be {vectors_mib:.0f} MiB)", flush=True)
    return report


def cifar10(tmp: Path, cifar: Path, sides=(96, 160)) -> dict:
    from imageclust.metrics import ari, clustering_accuracy, nmi
    from imageclust.tables import read_assignments

    report = {}
    for side in sides:
        params = write_params(
            tmp / "params.yaml",
            extract={"backbone": "efficientnet_lite0", "image_size": side},
            cluster={"method": "kmeans", "k": 10},
        )
        features, clusters = tmp / f"features{side}", tmp / f"cluster{side}"
        extract_s, extract_mib = run_stage(
            "extract",
            params,
            "--data",
            cifar,
            "--encoder",
            "none",
            "--out",
            features,
            "--work",
            tmp / f"work{side}",
            "--metrics",
            tmp / f"extract{side}.json",
        )
        cluster_s, _ = run_stage(
            "cluster", params, "--features", features, "--out", clusters, "--metrics", tmp / f"cluster{side}.json"
        )
        a = read_assignments(clusters / "assignments.parquet")
        test = a.splits == "test"
        y, c = a.labels[test], a.clusters[test]
        report[str(side)] = {
            "test_acc": round(clustering_accuracy(y, c), 4),
            "test_nmi": round(nmi(y, c), 4),
            "test_ari": round(ari(y, c), 4),
            "train_acc": round(clustering_accuracy(a.labels[~test], a.clusters[~test]), 4),
            "extract_seconds": round(extract_s, 1),
            "extract_peak_rss_mib": round(extract_mib, 1),
            "extract_images_per_second": json.loads((tmp / f"extract{side}.json").read_text())["images_per_second"],
            "cluster_seconds": round(cluster_s, 1),
            "fit_samples": int((~test).sum()),
            "test_samples": int(test.sum()),
        }
        print(f"CIFAR-10 at {side} px: {report[str(side)]}", flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--parts", nargs="+", default=["throughput", "memory", "cifar10"])
    args = parser.parse_args()
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    report["cpus"] = os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cifar = prepare_cifar10(tmp) if {"throughput", "cifar10"} & set(args.parts) else None
        if "throughput" in args.parts:
            report["throughput"] = throughput(tmp, cifar)
        if "memory" in args.parts:
            report["memory"] = memory(tmp)
        if "cifar10" in args.parts:
            report["cifar10_efficientnet_lite0_kmeans"] = cifar10(tmp, cifar)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
