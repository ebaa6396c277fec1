"""Throughput of the pretrain stage's loop against a bare PyTorch loop of the same work, on this CPU.

Both train SimCLR on the same 28x28 grayscale images (10,240 of them, uint8 as the download stage
prepares them), with the same network, batch, augmentations (``gray``), optimizer and schedule.
The bare loop holds the images as one float tensor and does nothing but the steps; the stage's loop
reads the prepared memmap, draws batches, logs DVCLive curves, shows its progress bar and writes a
checkpoint every epoch. Each is timed over its last ``--epochs - 1`` epochs (the first warms up);
the target is a ratio of at least 0.9.

Usage: ``python benchmarks/pretrain_throughput.py --out benchmarks/results/pretrain_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CASES = {  # name -> pretrain params
    "small_cnn_16_32_64": {"backbone": "small_cnn", "widths": [16, 32, 64]},
    "small_cnn_32_64_128": {"backbone": "small_cnn"},
}


def images(n: int, seed: int = 0) -> np.ndarray:
    """Digit-like images: dark background, a few bright random strokes."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 28, 28, 1), np.uint8)
    for i in range(n):
        rows, cols = rng.integers(4, 24, size=(2, 60))
        x[i, rows, cols, 0] = 255
    return x


def bare_loop(x: np.ndarray, params, seed: int, epochs: int) -> float:
    """Images per second of the plain loop: the same model, loss, augmentations and optimizer."""
    from imageclust.augment import build_augmenter
    from imageclust.models.backbones import build_backbone
    from imageclust.pretrain.registry import METHODS

    torch.manual_seed(seed)
    method = METHODS[params.method].build(build_backbone(params.backbone, 1, 28, widths=params.widths), params)
    optimizer = torch.optim.AdamW(method.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    augment = build_augmenter(params.augment.preset)
    data = torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255)
    generator = torch.Generator().manual_seed(seed)
    steps = len(x) // params.batch_size
    method.train()
    for epoch in range(epochs):
        if epoch == 1:
            started = time.perf_counter()
        order = torch.randperm(len(x), generator=generator)
        for step in range(steps):
            batch = data[order[step * params.batch_size : (step + 1) * params.batch_size]]
            loss = method(augment(batch, generator), augment(batch, generator))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return (epochs - 1) * steps * params.batch_size / (time.perf_counter() - started)


def stage_loop(x: np.ndarray, params, seed: int, epochs: int, workdir: Path) -> float:
    """Images per second of the stage's loop (its own per-epoch measure), after the first epoch."""
    from imageclust.config import GlobalParams
    from imageclust.data.prepared import RawDataset, write_prepared
    from imageclust.pretrain import loop

    n = len(x)
    raw = RawDataset(
        name="bench",
        images=x,
        labels=np.zeros(n, np.int64),
        splits=np.array(["train"] * n),
        ids=np.array([f"s{i}" for i in range(n)]),
        classes=["0"],
    )
    write_prepared(workdir / "prepared", raw)
    loop.pretrain(
        workdir / "prepared",
        workdir / "encoder.pt",
        workdir / "ckpt",
        workdir / "live",
        GlobalParams(seed=seed, device="cpu"),
        ["train"],
        params,
    )
    rows = (workdir / "live/plots/metrics/images_per_second.tsv").read_text().splitlines()[2:]  # header, epoch 1
    seconds = sum(params.batch_size * (n // params.batch_size) / float(r.split("\t")[-1]) for r in rows)
    return len(rows) * params.batch_size * (n // params.batch_size) / seconds


def main() -> None:
    from imageclust.pretrain.params import PretrainParams

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=10_240)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    report = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "platform": platform.platform(),
        },
        "images": args.images,
        "epochs_timed": args.epochs - 1,
    }
    x = images(args.images)
    for name, options in CASES.items():
        params = PretrainParams(epochs=args.epochs, batch_size=256, warmup_epochs=1, checkpoint_every=1, **options)
        with tempfile.TemporaryDirectory() as tmp:
            stage = stage_loop(x, params, 0, args.epochs, Path(tmp))
        bare = bare_loop(x, params, 0, args.epochs)
        report[name] = {
            "stage_images_per_second": round(stage),
            "bare_images_per_second": round(bare),
            "ratio": round(stage / bare, 3),
        }
        print(name, report[name], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
