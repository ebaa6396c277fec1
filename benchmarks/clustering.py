"""Clustering at scale on this machine: k-means through the cluster stage's method against faiss
called directly with the same settings, and scikit-learn beside them, on 70,000 x 512 features
(a seeded mixture of 10 Gaussians; K=10, 3 restarts, 50 iterations, every point used).

Usage: ``python benchmarks/clustering.py --out benchmarks/results/clustering.json``.
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


def mixture(n: int, d: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)).astype(np.float32)
    labels = rng.integers(0, k, n)
    return centres[labels] + rng.normal(size=(n, d)).astype(np.float32) * 0.5, labels


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def kmeans_70k(n: int = 70_000, d: int = 512, k: int = 10, n_init: int = 3, iters: int = 50) -> dict:
    import faiss
    from sklearn.cluster import KMeans

    from imageclust.clustering.kmeans import fit_kmeans
    from imageclust.config import ClusterParams
    from imageclust.metrics import ari

    x, labels = mixture(n, d, k)
    params = ClusterParams(k=k, kmeans={"backend": "faiss", "init": "random", "n_init": n_init, "max_iter": iters})

    def direct():
        model = faiss.Kmeans(d, k, niter=iters, nredo=n_init, seed=0, max_points_per_centroid=-(-n // k),
                             verbose=False)
        model.train(x)
        return model.index.search(x, 1)[1].ravel()

    ours_s, ours = timed(lambda: fit_kmeans(x, params, 0).predict(x)[0])
    direct_s, direct_labels = timed(direct)
    pp_params = params.model_copy(update={"kmeans": params.kmeans.model_copy(update={"init": "kmeans++"})})
    pp_s, pp = timed(lambda: fit_kmeans(x, pp_params, 0).predict(x)[0])
    sk_s, sk = timed(lambda: KMeans(k, n_init=n_init, max_iter=iters, random_state=0).fit_predict(x))
    report = {
        "shape": [n, d], "k": k, "n_init": n_init, "max_iter": iters,
        "stage_faiss_random_init_seconds": round(ours_s, 2), "faiss_direct_seconds": round(direct_s, 2),
        "ratio_to_direct": round(ours_s / direct_s, 3),
        "stage_faiss_kmeanspp_seconds": round(pp_s, 2), "sklearn_seconds": round(sk_s, 2),
        "ari_to_truth": {"stage_faiss": round(ari(labels, ours), 4), "faiss_direct": round(ari(labels, direct_labels), 4),
                         "stage_faiss_kmeanspp": round(ari(labels, pp), 4), "sklearn": round(ari(labels, sk), 4)},
    }
    print(report, flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    report = {"cpus": os.cpu_count(), "kmeans_70k_x_512": kmeans_70k()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
