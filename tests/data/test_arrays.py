"""Pixel arrays (.npz, images.npy + labels.npy) and pixel tables (CSV, parquet) through prepare()."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imageclust.data.params import DataParams
from imageclust.data.prepared import load_prepared
from imageclust.data.stage import prepare
from imageclust.errors import DataError, ParamsError
from imageclust.tables import UNLABELED


def prepared(tmp_path, **params):
    params.setdefault("download_dir", str(tmp_path / "downloads"))
    meta = prepare(DataParams(**params), 0, tmp_path / "prepared")
    return meta, load_prepared(tmp_path / "prepared")


def gray_images(n=20, side=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, side, side), dtype=np.uint8)


# --- arrays ---------------------------------------------------------------------------------------

def test_npz_with_images_and_labels(tmp_path):
    images, labels = gray_images(), np.arange(20) % 4
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    meta, data = prepared(tmp_path, name="arrays", root=str(tmp_path / "d.npz"), test_fraction=0.25)
    assert meta["classes"] == ["0", "1", "2", "3"] and meta["counts"] == {"test": 5, "train": 15}
    assert data.images.shape == (20, 6, 6, 1)
    order = np.argsort([int(i.split("-")[1]) for i in data.ids])
    np.testing.assert_array_equal(data.images[order][..., 0], images)
    np.testing.assert_array_equal(data.labels[order], labels)


def test_keras_style_npz_gives_the_splits(tmp_path):
    np.savez(tmp_path / "mnist.npz", x_train=gray_images(12), y_train=np.arange(12) % 3,
             x_test=gray_images(6, seed=1), y_test=np.arange(6) % 3)
    meta, data = prepared(tmp_path, name="arrays", root=str(tmp_path / "mnist.npz"))
    assert meta["counts"] == {"test": 6, "train": 12}
    assert data.ids[0] == "train-0000000" and "test-0000005" in set(data.ids)


def test_npy_folder_channels_first_float_and_no_labels(tmp_path):
    folder = tmp_path / "arrays"
    folder.mkdir()
    chw = np.zeros((4, 3, 5, 5), dtype=np.float32)
    chw[:, 0] = 1.0  # pure red
    np.save(folder / "images.npy", chw)
    meta, data = prepared(tmp_path, name="arrays", root=str(folder), test_fraction=0.0)
    assert data.images.shape == (4, 5, 5, 3) and meta["classes"] == [] and meta["labeled"] == 0
    assert (data.images[..., 0] == 255).all() and (data.images[..., 1:] == 0).all()
    assert (data.labels == UNLABELED).all()


def test_uint16_and_rgba_arrays(tmp_path):
    rgba = np.zeros((2, 4, 4, 4), dtype=np.uint8)  # fully transparent black: white once composited
    np.savez(tmp_path / "rgba.npz", x=rgba, y=np.array(["cat", "dog"]))
    meta, data = prepared(tmp_path, name="arrays", root=str(tmp_path / "rgba.npz"), test_fraction=0.0)
    assert meta["classes"] == ["cat", "dog"] and (data.images == 255).all()

    np.savez(tmp_path / "deep.npz", images=np.full((2, 3, 3), 65535, dtype=np.uint16))
    _, deep = prepared(tmp_path / "b", name="arrays", root=str(tmp_path / "deep.npz"), test_fraction=0.0)
    assert (deep.images == 255).all()


@pytest.mark.parametrize("content, message", [
    ({"pixels": np.zeros((2, 3, 3), np.uint8)}, "no image array"),
    ({"images": np.zeros((2, 3, 3), np.uint8), "labels": np.zeros(3)}, "3 labels for 2 images"),
    ({"images": np.zeros((2, 3), np.uint8)}, "images of shape (2, 3)"),
])
def test_bad_arrays_are_refused_in_one_line(tmp_path, content, message):
    np.savez(tmp_path / "bad.npz", **content)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        prepared(tmp_path, name="arrays", root=str(tmp_path / "bad.npz"))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "prepared").exists()


def test_missing_or_unset_root(tmp_path):
    with pytest.raises(DataError, match="not found"):
        prepared(tmp_path, name="arrays", root=str(tmp_path / "nope.npz"))
    with pytest.raises(DataError, match="data.root is not set"):
        prepared(tmp_path, name="pixel_table")


# --- tables ---------------------------------------------------------------------------------------

def fashion_like_csv(path, n=30, side=4, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (n, side * side))
    labels = np.arange(n) % 3
    header = ",".join(["label", *[f"pixel{i + 1}" for i in range(side * side)]])
    rows = [",".join(map(str, [label, *row])) for label, row in zip(labels, pixels)]
    path.write_text("\n".join([header, *rows]) + "\n")
    return pixels.reshape(n, side, side).astype(np.uint8), labels


def test_csv_in_the_fashion_mnist_layout(tmp_path):
    pixels, labels = fashion_like_csv(tmp_path / "fashion.csv")
    meta, data = prepared(tmp_path, name="pixel_table", root=str(tmp_path / "fashion.csv"), test_fraction=0.2)
    assert meta["classes"] == ["0", "1", "2"] and meta["counts"] == {"test": 6, "train": 24}
    assert data.images.shape == (30, 4, 4, 1)
    rows = np.array([int(i.split("-")[1]) for i in data.ids])
    np.testing.assert_array_equal(data.images[..., 0], pixels[rows])
    np.testing.assert_array_equal(data.labels, labels[rows])
    assert list((tmp_path / "downloads").iterdir()) == []  # the scratch copy is gone


def test_parquet_with_split_id_names_and_rgb_pixels(tmp_path):
    n, side = 6, 2
    rgb = np.arange(n * side * side * 3).reshape(n, side, side, 3) % 256
    columns = {f"p{i}": rgb.reshape(n, -1)[:, i] for i in range(side * side * 3)}
    table = pa.table({"id": [f"img{i}" for i in range(n)], "split": ["train"] * 4 + ["test"] * 2,
                      "label": ["cat", "dog", None, "cat", "dog", "cat"], **columns})
    pq.write_table(table, tmp_path / "t.parquet")
    meta, data = prepared(tmp_path, name="pixel_table", root=str(tmp_path / "t.parquet"))
    assert meta["classes"] == ["cat", "dog"] and meta["counts"] == {"test": 2, "train": 4}
    assert list(data.ids) == [f"img{i}" for i in range(n)]
    np.testing.assert_array_equal(data.labels, [0, 1, UNLABELED, 0, 1, 0])
    np.testing.assert_array_equal(data.images, rgb.astype(np.uint8))


def test_unlabelled_float_table(tmp_path):
    table = pa.table({f"p{i}": np.linspace(0, 1, 5) for i in range(9)})
    pq.write_table(table, tmp_path / "u.parquet")
    meta, data = prepared(tmp_path, name="pixel_table", root=str(tmp_path / "u.parquet"), test_fraction=0.0)
    assert meta["labeled"] == 0 and meta["classes"] == []
    assert data.images[-1].max() == 255 and data.images[0].max() == 0


@pytest.mark.parametrize("columns, message", [
    ({"label": [0, 1], "a": [1, 2], "b": [3, 4]}, "2 pixel columns make neither"),
    ({"label": [0, 1], **{f"p{i}": [0, 300] for i in range(4)}}, "column 'p0' has values outside 0-255"),
])
def test_bad_tables_are_refused_in_one_line(tmp_path, columns, message):
    pq.write_table(pa.table(columns), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=message) as err:
        prepared(tmp_path, name="pixel_table", root=str(tmp_path / "bad.parquet"))
    assert "\n" not in str(err.value)
    assert list((tmp_path / "downloads").iterdir()) == []


def test_unknown_split_and_limit(tmp_path):
    fashion_like_csv(tmp_path / "f.csv", n=60)
    with pytest.raises(ParamsError, match="data.splits"):
        prepared(tmp_path, name="pixel_table", root=str(tmp_path / "f.csv"), splits=["validation"])
    meta, data = prepared(tmp_path, name="pixel_table", root=str(tmp_path / "f.csv"), max_per_split=9,
                          test_fraction=0.5)
    assert meta["counts"] == {"test": 9, "train": 9}
    assert np.bincount(data.labels[data.splits == "train"]).tolist() == [3, 3, 3]  # stratified
