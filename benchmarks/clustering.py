"""Clustering at scale on this machine:

- ``kmeans_70k``: k-means through the cluster stage's method against faiss called directly with the
  same settings, and scikit-learn beside them, on 70,000 x 512 features (a seeded mixture of 10
  Gaussians; K=10, 3 restarts, 50 iterations, every point used);
- ``kmeans_1m``: k-means with K=1,000 on 1,000,000 x 128 synthetic features (faiss): time and peak memory;
- ``spectral_mnist``: spectral clustering (sparse kNN graph) on all 70,000 MNIST images' features from
  EfficientNet-Lite0's ImageNet weights (extracted once by the project's stages, then cached): time,
  peak memory and ACC/NMI against the labels;
- ``auto_k_mnist``: ``cluster.k: auto`` on the same MNIST features, each method's own criterion;
- ``methods_mnist``: every method, with and without UMAP, fitted on the 60,000 training images and
  scored on the 10,000 test images it assigns by its rule.

Each case runs in a fresh interpreter, so its peak resident memory (VmHWM) is its own.

Usage: ``python benchmarks/clustering.py --out benchmarks/results/clustering.json [--parts ...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CACHE = REPO / "benchmarks" / ".cache"  # extracted features kept between runs (gitignored)
TORCHVISION_ROOT = REPO.parent / "shared" / "datasets" / "torchvision"


def mnist_features(side: int = 96) -> Path:
    """All 70,000 MNIST images (shared torchvision root) through EfficientNet-Lite0's ImageNet
    weights at ``side`` px, by the project's own download and extract stages; cached."""
    from benchmarks.extract import run_stage, write_params
    from imageclust.data.params import DataParams
    from imageclust.data.stage import prepare

    out = CACHE / f"mnist-efficientnet_lite0-{side}"
    if (out / "features" / "_meta.json").exists():
        return out / "features"
    prepared = out / "prepared"
    if not (prepared / "meta.json").exists():
        prepare(DataParams(name="mnist", root=str(TORCHVISION_ROOT)), 0, prepared)
    params = write_params(out / "params.yaml", extract={"backbone": "efficientnet_lite0", "image_size": side})
    seconds, _ = run_stage(
        "extract", params, "--data", prepared, "--encoder", "none", "--out", out / "features", "--work", out / "work"
    )
    print(f"MNIST features extracted in {seconds:.0f}s", flush=True)
    return out / "features"


def mixture(n: int, d: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d), dtype=np.float32)
    labels = rng.integers(0, k, n)
    x = centres[labels]
    x += rng.standard_normal((n, d), dtype=np.float32) * 0.5  # float32 throughout: no transient float64 copy
    return x, labels


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def kmeans_70k(n: int = 70_000, d: int = 512, k: int = 10, n_init: int = 3, iters: int = 50) -> dict:
    import faiss
    from sklearn.cluster import KMeans

    from imageclust.clustering.kmeans import fit_kmeans
    from imageclust.clustering.params import ClusterParams
    from imageclust.metrics import ari

    x, labels = mixture(n, d, k)
    params = ClusterParams(k=k, kmeans={"backend": "faiss", "init": "random", "n_init": n_init, "max_iter": iters})

    def direct():
        model = faiss.Kmeans(d, k, niter=iters, nredo=n_init, seed=0, max_points_per_centroid=-(-n // k), verbose=False)
        model.train(x)
        return model.index.search(x, 1)[1].ravel()

    ours_s, ours = timed(lambda: fit_kmeans(x, k, params.kmeans, 0).predict(x)[0])
    direct_s, direct_labels = timed(direct)
    pp_params = params.model_copy(update={"kmeans": params.kmeans.model_copy(update={"init": "kmeans++"})})
    pp_s, pp = timed(lambda: fit_kmeans(x, k, pp_params.kmeans, 0).predict(x)[0])
    sk_s, sk = timed(lambda: KMeans(k, n_init=n_init, max_iter=iters, random_state=0).fit_predict(x))
    report = {
        "shape": [n, d],
        "k": k,
        "n_init": n_init,
        "max_iter": iters,
        "stage_faiss_random_init_seconds": round(ours_s, 2),
        "faiss_direct_seconds": round(direct_s, 2),
        "ratio_to_direct": round(ours_s / direct_s, 3),
        "stage_faiss_kmeanspp_seconds": round(pp_s, 2),
        "sklearn_seconds": round(sk_s, 2),
        "ari_to_truth": {
            "stage_faiss": round(ari(labels, ours), 4),
            "faiss_direct": round(ari(labels, direct_labels), 4),
            "stage_faiss_kmeanspp": round(ari(labels, pp), 4),
            "sklearn": round(ari(labels, sk), 4),
        },
    }
    print(report, flush=True)
    return report


def peak_rss_mib() -> float:
    """This process's high-water resident memory (VmHWM, reset by exec), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _measured(fn, args):
    return fn(*args), peak_rss_mib()


def in_fresh_process(fn, *args) -> dict:
    """``fn(*args)`` (a dict) in a new interpreter, with that interpreter's peak memory added."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result, peak = pool.apply(_measured, (fn, args))
    result["peak_rss_mib"] = round(peak, 1)
    print(result, flush=True)
    return result


def kmeans_1m(n: int = 1_000_000, d: int = 128, k: int = 1000, iters: int = 20, init: str = "random") -> dict:
    from imageclust.clustering.kmeans import fit_kmeans
    from imageclust.clustering.params import ClusterParams
    from imageclust.metrics import nmi

    x, labels = mixture(n, d, k)
    held = peak_rss_mib()
    params = ClusterParams(k=k, kmeans={"backend": "faiss", "init": init, "n_init": 1, "max_iter": iters})
    fit_s, model = timed(lambda: fit_kmeans(x, k, params.kmeans, 0))
    assign_s, (clusters, _) = timed(lambda: model.predict(x))
    return {
        "shape": [n, d],
        "k": k,
        "init": init,
        "n_init": 1,
        "max_iter": iters,
        "fit_seconds": round(fit_s, 1),
        "assign_seconds": round(assign_s, 1),
        "features_mib": round(x.nbytes / 2**20, 1),
        "rss_before_fit_mib": round(held, 1),
        "nmi_to_truth": round(nmi(labels, clusters), 4),
        "clusters_used": int(len(np.unique(clusters))),
    }


def _mnist(features: Path):
    from imageclust.tables import read_features

    table = read_features(features)
    return table.vectors.astype(np.float32), table.labels, table.splits


def _scores(labels, clusters) -> dict:
    from imageclust.metrics import ari, clustering_accuracy, nmi, purity

    return {
        "acc": round(clustering_accuracy(labels, clusters), 4),
        "nmi": round(nmi(labels, clusters), 4),
        "ari": round(ari(labels, clusters), 4),
        "acc_many_to_one": round(purity(labels, clusters), 4),
    }


def spectral_mnist(features: Path, pca_dim: int | None, num_neighbors: int, eigen_solver: str) -> dict:
    """Spectral clustering, K=10, fitted on all 70,000 vectors; PCA (if any) included in the time."""
    from imageclust.clustering.params import ClusterParams
    from imageclust.clustering.preprocess import FeatureTransform
    from imageclust.clustering.spectral import fit_spectral

    x, labels, _ = _mnist(features)
    held = peak_rss_mib()
    params = ClusterParams(
        method="spectral",
        k=10,
        pca_dim=pca_dim,
        spectral={"num_neighbors": num_neighbors, "eigen_solver": eigen_solver},
    )
    started = time.perf_counter()
    _, reduced = FeatureTransform.fit(x, params, 0)
    model = fit_spectral(reduced, params.k, params.spectral, 0)
    seconds = time.perf_counter() - started
    return {
        "samples": len(x),
        "dim": x.shape[1],
        "pca_dim": pca_dim,
        "num_neighbors": num_neighbors,
        "eigen_solver": eigen_solver,
        "seconds": round(seconds, 1),
        "rss_before_fit_mib": round(held, 1),
        **model.stats,
        **_scores(labels, model.fit_labels),
    }


def auto_k_mnist(features: Path, method: str, criterion: str, pca_dim: int | None) -> dict:
    """K chosen without labels on the 60,000 training images' features (default range 2-20)."""
    from imageclust.clustering.choose_k import choose_k
    from imageclust.clustering.params import ClusterParams
    from imageclust.clustering.preprocess import FeatureTransform
    from imageclust.clustering.registry import METHODS

    x, _, splits = _mnist(features)
    params = ClusterParams(method=method, k="auto", pca_dim=pca_dim, auto_k={"criterion": criterion})
    _, reduced = FeatureTransform.fit(x[splits == "train"], params, 0)
    seconds, (k, curve, criterion) = timed(lambda: choose_k(reduced, params.auto_k, METHODS[method], params.block, 0))
    return {
        "method": method,
        "pca_dim": pca_dim,
        "criterion": criterion,
        "chosen_k": k,
        "range": [params.auto_k.min_k, params.auto_k.max_k],
        "max_samples": params.auto_k.max_samples,
        "seconds": round(seconds, 1),
        "curve": {str(key): round(v, 4) for key, v in curve.items()},
    }


def method_mnist(features: Path, name: str, cluster: dict) -> dict:
    """One method through the cluster stage's code: fitted on the training split, test assigned by its rule."""
    import tempfile

    from imageclust.clustering.params import ClusterParams
    from imageclust.clustering.stage import run_clustering
    from imageclust.tables import read_assignments

    with tempfile.TemporaryDirectory() as tmp:
        stats = run_clustering(features, Path(tmp) / "c", 0, ["train"], ClusterParams(**cluster))
        a = read_assignments(Path(tmp) / "c" / "assignments.parquet")
    test = a.splits == "test"
    return {
        "name": name,
        "params": cluster,
        "k": stats["k"],
        "seconds": stats["seconds"],
        "train": _scores(a.labels[~test], a.clusters[~test]),
        "test": _scores(a.labels[test], a.clusters[test]),
    }


MNIST_METHODS = {
    "kmeans": {"kmeans": {"backend": "faiss"}},
    "kmeans_pca256_whiten": {"pca_dim": 256, "whiten": True, "kmeans": {"backend": "faiss"}},
    "gmm_pca64": {"method": "gmm", "pca_dim": 64},
    "agglomerative_pca64": {"method": "agglomerative", "pca_dim": 64},
    "spectral_pca64": {"method": "spectral", "pca_dim": 64},
    "hdbscan_umap10": {"method": "hdbscan", "pca_dim": 64, "umap_dim": 10, "hdbscan": {"min_cluster_size": 500}},
    "pic": {"method": "pic", "pca_dim": 64},
    "kmeans_umap10": {"pca_dim": 64, "umap_dim": 10, "kmeans": {"backend": "faiss"}},
    "gmm_umap10": {"method": "gmm", "pca_dim": 64, "umap_dim": 10},
}


def main() -> None:
    parts = ["kmeans_70k", "kmeans_1m", "spectral_mnist", "auto_k_mnist", "methods_mnist"]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--parts", nargs="+", choices=parts, default=parts)
    args = parser.parse_args()
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    report["cpus"] = os.cpu_count()
    if "kmeans_70k" in args.parts:
        report["kmeans_70k_x_512"] = kmeans_70k()
    if "kmeans_1m" in args.parts:
        report["kmeans_1m_x_128_k1000"] = in_fresh_process(kmeans_1m)
    features = mnist_features() if {"spectral_mnist", "auto_k_mnist", "methods_mnist"} & set(args.parts) else None
    if "spectral_mnist" in args.parts:
        report["spectral_mnist_70k"] = [
            in_fresh_process(spectral_mnist, features, pca_dim, 10, solver)
            for pca_dim, solver in ((64, "arpack"), (64, "lobpcg"), (None, "arpack"))
        ]
    if "auto_k_mnist" in args.parts:
        report["auto_k_mnist"] = [
            in_fresh_process(auto_k_mnist, features, method, criterion, 64)
            for method, criterion in (
                ("kmeans", "auto"),
                ("kmeans", "eigengap"),
                ("spectral", "auto"),
                ("agglomerative", "auto"),
                ("gmm", "auto"),
            )
        ]
    if "methods_mnist" in args.parts:
        report["methods_mnist"] = [
            in_fresh_process(method_mnist, features, name, cluster) for name, cluster in MNIST_METHODS.items()
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
