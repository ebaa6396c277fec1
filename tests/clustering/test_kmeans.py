"""k-means by scikit-learn and faiss, plain and spherical."""

import numpy as np
from fakes import blobs

from imageclust.clustering.kmeans import fit_kmeans
from imageclust.clustering.params import ClusterParams
from imageclust.clustering.preprocess import l2_normalize
from imageclust.clustering.registry import METHODS
from imageclust.metrics import clustering_accuracy


def test_fit_kmeans_on_blobs():
    x, labels = blobs()
    model = fit_kmeans(x, 3, ClusterParams(kmeans={"n_init": 2}).kmeans, 0)
    assert METHODS["kmeans"].fit is fit_kmeans
    assert model.centroids.shape == (3, 5) and model.centroids.dtype == np.float32
    clusters, _ = model.predict(x)
    assert clustering_accuracy(labels, clusters) == 1.0
    assert model.stats["inertia"] > 0 and model.stats["iterations"] >= 1


def test_faiss_and_sklearn_kmeans_agree_on_easy_data():
    from imageclust.metrics import ari

    x, labels = blobs(n_per=50)
    sk = fit_kmeans(x, 3, ClusterParams().kmeans, 0).predict(x)[0]
    fa = fit_kmeans(x, 3, ClusterParams(kmeans={"backend": "faiss"}).kmeans, 0)
    assert ari(sk, fa.predict(x)[0]) == 1.0 and ari(labels, sk) == 1.0
    assert fa.centroids.dtype == np.float32 and fa.stats["objective"] > 0


def test_spherical_kmeans_centres_are_unit_vectors():
    x, _ = blobs(n_per=30)
    model = fit_kmeans(l2_normalize(x), 3, ClusterParams(kmeans={"backend": "faiss", "spherical": True}).kmeans, 0)
    np.testing.assert_allclose(np.linalg.norm(model.centroids, axis=1), 1.0, rtol=1e-5)
