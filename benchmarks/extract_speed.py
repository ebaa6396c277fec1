"""Every inference engine and precision side by side, in one run on this machine:

- model only: EfficientNet-Lite0 (as the extract stage builds it) at 160 px, 224 px, batch 32 and 64,
  images/s of each engine and precision against PyTorch FP32 (channels-last: the stage before
  engines), the lowest cosine of its features to PyTorch FP32, and the effective GFLOP/s against
  this CPU's measured FP32 matmul peak;
- end to end: a folder of photo-sized JPEGs (CIFAR-10 test images upscaled to 500 x 375) through the
  download stage (decoding with and without JPEG draft mode) and the extract stage with each engine
  at 224 px, images/s of each stage and of both together.

Usage: ``python benchmarks/extract_speed.py --out benchmarks/results/extract_speed.json [--images 2000]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ARCHIVE = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
CANDIDATES = [("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")]


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - started) / 1e9


def model_flops(model: torch.nn.Module, side: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, side, side))
    return float(counter.get_total_flops())


def model_only(sides=(160, 224), batches=(32, 64)) -> list[dict]:
    from imageclust.features.engines import MIN_COSINE, _cosine, _time, build_runner, torch_runner
    from imageclust.models.efficientnet_lite import efficientnet_lite0

    model = efficientnet_lite0(None).model.eval()
    rows = []
    for side in sides:
        flops = model_flops(model, side)
        for batch in batches:
            x = torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(0))
            reference_run = torch_runner(model, "fp32", torch.device("cpu"))
            reference = reference_run(x)
            base = _time(reference_run, x)
            with tempfile.TemporaryDirectory() as cache:
                for engine, precision in CANDIDATES:
                    row = {"side": side, "batch": batch, "engine": engine, "precision": precision}
                    try:
                        run = build_runner(engine, precision, model, x, Path(cache) / engine, torch.device("cpu"))
                        cosine = _cosine(run(x), reference)
                        speed = base if (engine, precision) == ("torch", "fp32") else _time(run, x)
                    except Exception as err:  # not on this machine
                        rows.append({**row, "unavailable": str(err).splitlines()[0][:200]})
                        print(row, "unavailable", flush=True)
                        continue
                    row.update(
                        images_per_second=round(speed, 1),
                        ratio_to_torch_fp32=round(speed / base, 2),
                        cosine_to_fp32=round(cosine, 7),
                        agrees=cosine >= MIN_COSINE,
                        effective_gflops=round(flops * speed / 1e9, 1),
                    )
                    rows.append(row)
                    print(row, flush=True)
    return rows


def photo_folder(root: Path, count: int) -> Path:
    """CIFAR-10 test JPEGs upscaled to 500 x 375, in class folders."""
    from PIL import Image

    per_class, taken = -(-count // 10), {}
    with tarfile.open(ARCHIVE) as archive:
        for member in archive:
            parts = Path(member.name).parts  # cifar10-jpeg/test/<class>/<n>.jpg
            if not (member.isfile() and len(parts) == 4 and parts[1] == "test"):
                continue
            if taken.get(parts[2], 0) >= per_class:
                continue
            image = Image.open(archive.extractfile(member)).convert("RGB").resize((500, 375), Image.BICUBIC)
            target = root / parts[2] / parts[3]
            target.parent.mkdir(parents=True, exist_ok=True)
            image.save(target, quality=90)
            taken[parts[2]] = taken.get(parts[2], 0) + 1
            if sum(taken.values()) >= per_class * 10:
                break
    return root


def end_to_end(count: int, side: int = 224) -> dict:
    from imageclust.config import GlobalParams
    from imageclust.data.params import DataParams
    from imageclust.data.stage import prepare
    from imageclust.features.params import ExtractParams
    from imageclust.features.stage import extract_features

    result = {"images": count, "photo_size": [500, 375], "side": side}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = photo_folder(tmp / "photos", count)
        data = DataParams(name="image_folder", root=str(folder), image_size=side, download_dir=str(tmp / "raw"))
        from PIL.JpegImagePlugin import JpegImageFile

        draft = JpegImageFile.draft
        for mode in ("full", "draft"):
            if mode == "full":  # what the download stage did before draft mode
                JpegImageFile.draft = lambda self, *a, **k: None
            started = time.perf_counter()
            prepare(data, 0, tmp / f"prepared-{mode}")
            JpegImageFile.draft = draft
            seconds = time.perf_counter() - started
            result[f"download_{mode}_images_per_second"] = round(count / seconds, 1)
            print(mode, "decode", result[f"download_{mode}_images_per_second"], flush=True)
        prepared = tmp / "prepared-draft"
        vectors = {}
        for engine, precision in CANDIDATES:
            params = ExtractParams(
                backbone="efficientnet_lite0", image_size=side, engine=engine, precision=precision, num_workers=1
            )
            summary = extract_features(
                prepared,
                None,
                tmp / f"f-{engine}-{precision}",
                tmp / f"w-{engine}-{precision}",
                GlobalParams(device="cpu"),
                params,
                tmp / "engines",
            )
            ran = summary["engine"]
            key = f"{ran['engine']}-{ran['precision']}"
            if (ran["engine"], ran["precision"]) != (engine, precision):
                result[f"extract_{engine}_{precision}"] = {"unavailable": ran["reason"]}
                print(engine, precision, "unavailable", flush=True)
                continue
            from imageclust.tables import read_features

            vectors[key] = read_features(tmp / f"f-{engine}-{precision}").vectors
            result[f"extract_{engine}_{precision}"] = {"images_per_second": summary["images_per_second"]}
            print(engine, precision, summary["images_per_second"], flush=True)
        reference = torch.from_numpy(vectors["torch-fp32"])
        for key, v in vectors.items():
            engine, precision = key.split("-")
            entry = result[f"extract_{engine}_{precision}"]
            entry["cosine_to_fp32"] = round(
                float(
                    torch.nn.functional.cosine_similarity(torch.from_numpy(v).double(), reference.double(), dim=1).min()
                ),
                7,
            )
            both = 1 / (1 / result["download_draft_images_per_second"] + 1 / entry["images_per_second"])
            entry["download_and_extract_images_per_second"] = round(both, 1)
            entry["ratio_to_torch_fp32"] = round(
                entry["images_per_second"] / result["extract_torch_fp32"]["images_per_second"], 2
            )
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--parts", nargs="+", default=["model", "end_to_end"], choices=["model", "end_to_end"])
    args = parser.parse_args(argv)
    from imageclust.features.engines import cpu_flags

    report = {
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpu_flags": cpu_flags(),
            "threads": torch.get_num_threads(),
            "matmul_fp32_peak_gflops": round(matmul_peak_gflops(), 1),
        }
    }
    print(report, flush=True)
    if "model" in args.parts:
        report["model_only"] = model_only()
    if "end_to_end" in args.parts:
        report["end_to_end"] = end_to_end(args.images)
    if args.out.is_file():  # a rerun of some parts keeps the others
        report = {**json.loads(args.out.read_text()), **report}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
