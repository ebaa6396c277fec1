"""The Gaussian mixture and the method blocks' own checks."""

import numpy as np
import pytest
from fakes import blobs

from imageclust.clustering.base import Clustering
from imageclust.clustering.params import ClusterParams
from imageclust.clustering.registry import METHODS
from imageclust.metrics import clustering_accuracy


def test_gmm_reports_bic_and_round_trips(tmp_path):
    x, labels = blobs(n_per=30)
    model = METHODS["gmm"].fit(x, 3, ClusterParams(method="gmm").gmm, 0)
    assert np.isfinite(model.stats["bic"]) and model.stats["converged"]
    back = Clustering.from_arrays(dict(np.load(_saved(tmp_path, model))))
    np.testing.assert_array_equal(back.predict(x)[0], model.predict(x)[0])
    assert clustering_accuracy(labels, back.predict(x)[0]) == 1.0


def _saved(tmp_path, model):
    np.savez(tmp_path / "m.npz", **model.to_arrays())
    return tmp_path / "m.npz"


def test_method_params_are_checked():
    with pytest.raises(ValueError, match="spherical k-means needs backend faiss"):
        ClusterParams(kmeans={"spherical": True})
    with pytest.raises(ValueError, match="needs cluster.l2_normalize=true"):
        ClusterParams(l2_normalize=False, kmeans={"spherical": True, "backend": "faiss"})
    with pytest.raises(ValueError):
        ClusterParams(gmm={"covariance": "dense"})
