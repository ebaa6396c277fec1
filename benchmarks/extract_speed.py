"""Every inference engine and precision side by side, in one run on this machine:

- model only: EfficientNet-Lite0 (as the extract stage builds it) at 160 px, 224 px, batch 32 and 64,
  on CIFAR-10 test images (real images: on random input bf16 and int8 look far closer to FP32 than
  they are), images/s of each engine and precision against PyTorch FP32 (channels-last: the stage
  before engines), the lowest and median cosine of its features to PyTorch FP32 on the measured batch
  and on the next batch (int8 is calibrated on the measured one), and the effective GFLOP/s against
  the CPU's measured FP32 matmul peak;
- end to end: a folder of photo-sized JPEGs (CIFAR-10 test images upscaled to 500 x 375) through the
  download stage (decoding with and without JPEG draft mode) and the extract stage with each engine
  at 224 px, images/s of each stage and of both together (every precision forced through with
  ``extract.min_cosine: 0``, so that its speed is measured even where the guard would refuse it);
- accuracy: the 10,000 CIFAR-10 test images through the extract stage at 224 px with each engine and
  precision, the cosines to PyTorch FP32 over all of them, and k-means' ACC (10 clusters, L2-normalised
  features, 3 seeds): what a lower precision costs the clustering.

Usage: ``python benchmarks/extract_speed.py --out benchmarks/results/extract_speed.json [--images 2000]
[--parts model end_to_end accuracy]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
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
CANDIDATES = [
    ("torch", "fp32"),
    ("torch", "bf16"),
    ("onnxruntime", "fp32"),
    ("onnxruntime", "int8"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
    ("openvino", "int8"),
]


def cifar_test_images(count: int) -> tuple[torch.Tensor, np.ndarray]:
    """The first ``count`` CIFAR-10 test images as uint8 (n, 3, 32, 32), with their class indices."""
    from PIL import Image

    images, labels, classes = [], [], {}
    with tarfile.open(ARCHIVE) as archive:
        for member in archive:
            parts = Path(member.name).parts  # cifar10-jpeg/test/<class>/<n>.jpg
            if member.isfile() and len(parts) == 4 and parts[1] == "test":
                images.append(np.asarray(Image.open(archive.extractfile(member)).convert("RGB")))
                labels.append(classes.setdefault(parts[2], len(classes)))
                if len(images) == count:
                    break
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), np.asarray(labels)


def cosine_stats(a: torch.Tensor, b: torch.Tensor) -> dict:
    cos = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1).numpy()
    return {"lowest": round(float(cos.min()), 6), "median": round(float(np.median(cos)), 6)}


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
    from imageclust.features.engines import MIN_COSINE, _time
    from imageclust.features.runners import build_runner, torch_runner
    from imageclust.models.efficientnet_lite import efficientnet_lite0

    model = efficientnet_lite0(None).model.eval()
    pixels, _ = cifar_test_images(2 * max(batches))
    rows = []
    for side in sides:
        flops = model_flops(model, side)
        # as the stage preprocesses: resized, scaled to [-1, 1] for EfficientNet-Lite
        images = torch.nn.functional.interpolate(pixels.float() / 127.5 - 1, size=side, mode="bilinear")
        for batch in batches:
            x, unseen = images[:batch].contiguous(), images[batch : 2 * batch].contiguous()
            reference_run = torch_runner(model, "fp32", torch.device("cpu"))
            reference = reference_run(x)
            base = _time(reference_run, x)
            with tempfile.TemporaryDirectory() as cache:
                for engine, precision in CANDIDATES:
                    row = {"side": side, "batch": batch, "engine": engine, "precision": precision}
                    try:
                        run = build_runner(engine, precision, model, x, Path(cache) / engine, torch.device("cpu"))
                        cosine = cosine_stats(run(x), reference)
                        unseen_cosine = cosine_stats(run(unseen), reference_run(unseen))
                        speed = base if (engine, precision) == ("torch", "fp32") else _time(run, x)
                    except Exception as err:  # not on this machine
                        rows.append({**row, "unavailable": str(err).splitlines()[0][:200]})
                        print(row, "unavailable", flush=True)
                        continue
                    row.update(
                        images_per_second=round(speed, 1),
                        ratio_to_torch_fp32=round(speed / base, 2),
                        cosine_to_fp32=cosine["lowest"],
                        median_cosine_to_fp32=cosine["median"],
                        next_batch_cosine_to_fp32=unseen_cosine,
                        agrees=cosine["lowest"] >= MIN_COSINE,
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
                backbone="efficientnet_lite0",
                image_size=side,
                engine=engine,
                precision=precision,
                num_workers=1,
                min_cosine=0.0,
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
            stats = cosine_stats(torch.from_numpy(v), reference)
            entry["cosine_to_fp32"], entry["median_cosine_to_fp32"] = stats["lowest"], stats["median"]
            both = 1 / (1 / result["download_draft_images_per_second"] + 1 / entry["images_per_second"])
            entry["download_and_extract_images_per_second"] = round(both, 1)
            entry["ratio_to_torch_fp32"] = round(
                entry["images_per_second"] / result["extract_torch_fp32"]["images_per_second"], 2
            )
    return result


def accuracy(count: int = 10_000, side: int = 224, seeds: int = 5) -> dict:
    """CIFAR-10's test images through the extract stage with each engine and precision, then k-means:
    fitted afresh on each precision's features (ACC over ``seeds``: what a user gets, k-means' own
    spread included), and FP32's fitted centroids assigning each precision's features (the share of
    images whose cluster changes and the ACC: the precision's effect alone)."""
    from sklearn.cluster import KMeans

    from imageclust.config import GlobalParams
    from imageclust.data.params import DataParams
    from imageclust.data.stage import prepare
    from imageclust.features.params import ExtractParams
    from imageclust.features.stage import extract_features
    from imageclust.metrics import clustering_accuracy
    from imageclust.tables import read_features

    result = {"images": count, "side": side, "kmeans_seeds": seeds}
    vectors, labels = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = DataParams(
            name="image_folder", root=str(ARCHIVE), splits=["test"], max_per_split=count, download_dir=str(tmp / "raw")
        )
        prepare(data, 0, tmp / "prepared")
        for engine, precision in CANDIDATES:
            params = ExtractParams(
                backbone="efficientnet_lite0", image_size=side, engine=engine, precision=precision, min_cosine=0.0
            )
            out = tmp / f"f-{engine}-{precision}"
            summary = extract_features(
                tmp / "prepared", None, out, tmp / "w", GlobalParams(device="cpu"), params, tmp / "engines"
            )
            key = f"{engine}_{precision}"
            if (summary["engine"]["engine"], summary["engine"]["precision"]) != (engine, precision):
                result[key] = {"unavailable": summary["engine"]["reason"]}
                continue
            features = read_features(out)
            vectors[key], labels = torch.from_numpy(features.vectors), features.labels
            result[key] = {"images_per_second": summary["images_per_second"]}
            shutil.rmtree(out)
    reference = vectors["torch_fp32"]
    unit = {key: torch.nn.functional.normalize(v, dim=1).numpy() for key, v in vectors.items()}
    fitted = {key: [KMeans(10, n_init=10, random_state=s).fit(u) for s in range(seeds)] for key, u in unit.items()}
    for key, u in unit.items():
        own = [clustering_accuracy(labels, km.labels_) for km in fitted[key]]
        fp32_centroids = [km.predict(u) for km in fitted["torch_fp32"]]
        result[key].update(
            cosine_to_fp32=cosine_stats(vectors[key], reference),
            kmeans_acc=[round(a, 4) for a in own],
            kmeans_acc_mean=round(float(np.mean(own)), 4),
            fp32_centroids_acc_mean=round(float(np.mean([clustering_accuracy(labels, c) for c in fp32_centroids])), 4),
            fp32_centroids_changed=round(
                float(np.mean([(c != km.labels_).mean() for c, km in zip(fp32_centroids, fitted["torch_fp32"])])), 4
            ),
        )
        print(key, result[key], flush=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument(
        "--parts", nargs="+", default=["model", "end_to_end", "accuracy"], choices=["model", "end_to_end", "accuracy"]
    )
    args = parser.parse_args(argv)
    from imageclust.features.runners import cpu_flags

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
    if "accuracy" in args.parts:
        report["accuracy"] = accuracy()
    if args.out.is_file():  # a rerun of some parts keeps the others
        report = {**json.loads(args.out.read_text()), **report}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
