"""Soft assignments (DEC's Student-t) and each method's rule for new points."""

import numpy as np

from imageclust.clustering.base import Clustering, student_t_assignment

# ---------------------------------------------------------------- assignments


def test_student_t_by_hand():
    # x = 0, centroids at squared distances 1 and 4: q ∝ (1/2, 1/5) -> (5/7, 2/7).
    q = student_t_assignment(np.array([[0.0, 0.0]]), np.array([[1.0, 0.0], [0.0, 2.0]]))
    np.testing.assert_allclose(q, [[5 / 7, 2 / 7]], rtol=1e-12)


def test_student_t_rows_sum_to_one_and_argmax_is_nearest():
    rng = np.random.default_rng(0)
    x, c = rng.normal(size=(50, 4)), rng.normal(size=(6, 4))
    q = student_t_assignment(x, c)
    assert q.shape == (50, 6) and (q > 0).all()
    np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-12)
    d2 = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(q.argmax(1), d2.argmin(1))


def test_student_t_point_on_centroid_is_finite():
    c = np.array([[1.0, 1.0], [1.0, 1.0 + 1e-9]], dtype=np.float32)
    q = student_t_assignment(c[:1], c)
    assert np.isfinite(q).all() and (q >= 0).all()


def test_clustering_predict_in_chunks_matches_unchunked():
    rng = np.random.default_rng(1)
    x, c = rng.normal(size=(23, 3)), rng.normal(size=(4, 3))
    model = Clustering(centroids=c)
    full = model.predict(x)
    chunked = model.predict(x, chunk=5)
    np.testing.assert_array_equal(full[0], chunked[0])
    np.testing.assert_allclose(full[1], chunked[1])
    assert full[1].dtype == np.float32
    q = student_t_assignment(x, c)
    np.testing.assert_allclose(full[1], q.max(1), rtol=1e-6)
