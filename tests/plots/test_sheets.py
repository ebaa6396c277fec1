"""Contact sheets: members ordered by confidence, mistakes framed, tiles sharp and of the right size."""

from __future__ import annotations

import numpy as np

from imageclust.metrics import NOISE
from imageclust.plots.sheets import (
    FRAME,
    GAP,
    MISMATCH,
    cluster_sheet,
    cluster_views,
    grid,
    overview_sheet,
    tile_side,
    tiles,
)
from imageclust.tables import UNLABELED

CLASSES = ["cat", "dog"]


def test_views_sort_by_confidence_and_flag_other_classes():
    clusters = np.array([0, 0, 0, 1, 1, NOISE])
    confidence = np.array([0.2, 0.9, 0.5, 0.7, 0.7, 0.1])
    labels = np.array([0, 0, 1, 1, UNLABELED, 0])
    views = cluster_views(clusters, confidence, labels, CLASSES)
    assert [v.cluster for v in views] == [0, 1, NOISE]  # noise last
    first, second, noise = views
    np.testing.assert_array_equal(first.rows, [1, 2, 0])  # most confident first
    np.testing.assert_array_equal(second.rows, [3, 4])  # equal confidence: by row
    assert first.name == "cluster 0 (cat)" and second.name == "cluster 1 (dog)"
    np.testing.assert_array_equal(first.mismatched, [False, True, False])  # row 2 is a dog among cats
    np.testing.assert_array_equal(second.mismatched, [False, False])  # an unlabelled member is never framed
    assert first.share == 2 / 3 and second.share == 1.0
    assert noise.name == "noise" and noise.share is None and not noise.mismatched.any()


def test_views_without_labels_name_clusters_only():
    views = cluster_views(np.array([1, 0, 1]), np.ones(3), np.full(3, UNLABELED), [])
    assert [v.name for v in views] == ["cluster 0", "cluster 1"]
    assert all(v.share is None and not v.mismatched.any() for v in views)


def test_small_images_scale_up_by_whole_factors_and_stay_sharp():
    assert tile_side(8) == 64 and tile_side(16) == 64 and tile_side(28) == 56 and tile_side(160) == 64
    image = np.zeros((1, 8, 8, 1), dtype=np.uint8)
    image[0, 0, 0] = 255
    tile = tiles(image, 64)
    assert tile.shape == (1, 64, 64, 3)
    assert (tile[0, :8, :8] == 255).all() and (tile[0, 8:, :] == 0).all()  # nearest neighbour: no blur


def test_non_square_images_are_padded_not_cut():
    image = np.full((1, 10, 20, 3), 100, dtype=np.uint8)
    tile = tiles(image, 20)[0]
    assert (tile[10, :] == 100).all()  # the whole width is kept
    assert (tile[0, :] == 255).all()  # padded above and below


def test_grid_places_tiles_and_frames_mismatches():
    t = np.full((3, 8, 8, 3), 0, dtype=np.uint8)
    canvas = grid(t, columns=2, framed=np.array([False, True, False]))
    assert canvas.shape == (2 * 8 + GAP, 2 * 8 + GAP, 3)
    assert (canvas[0, 8 + GAP] == MISMATCH).all()  # the second tile's frame
    assert (canvas[FRAME, 8 + GAP + FRAME] == 0).all()  # inside the frame: the image
    assert (canvas[0, 0] == 0).all()  # the first is not framed
    assert (canvas[8 + GAP, 8 + GAP] == 255).all()  # the empty slot stays background


def test_sheets_hold_the_expected_images():
    labels = np.array([0] * 30 + [1] * 5)
    clusters = np.zeros(35, dtype=np.int64)
    confidence = np.linspace(1.0, 0.0, 35)
    blue, green = np.array([0, 0, 200], np.uint8), np.array([0, 200, 0], np.uint8)  # text is grey: never these
    pixels = np.where((labels == 0)[:, None], blue, green)[:, None, None, :] * np.ones((1, 8, 8, 1), np.uint8)
    views = cluster_views(clusters, confidence, labels, CLASSES)
    sheet = np.asarray(cluster_sheet(views[0], lambda rows: pixels[rows], confident=10, uncertain=5, columns=5, side=8))
    # the 10 most confident are cats; the 5 least confident are the dogs, each framed
    frame_pixels = 8 * 8 - (8 - 2 * FRAME) ** 2
    assert (sheet == MISMATCH).all(-1).sum() == 5 * frame_pixels
    assert (sheet == blue).all(-1).sum() == 10 * 8 * 8
    assert (sheet == green).all(-1).sum() == 5 * (8 * 8 - frame_pixels)
    overview = np.asarray(overview_sheet(views, lambda rows: pixels[rows], per_cluster=4, side=8))
    assert overview.shape[0] == 8  # one cluster: one row of tiles
