"""Dataset sources and the canonical prepared form."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from imageclust.data.params import DataParams
from imageclust.data import digits
from imageclust.data.prepared import load_prepared, write_prepared
from imageclust.data.registry import DATASETS
from imageclust.data.stage import prepare
from imageclust.data.prepared import IMAGES_FILE, META_FILE, SAMPLES_FILE, PreparedData, RawDataset
from imageclust.errors import DataError
from imageclust.tables import UNLABELED


def all_pixels(source):
    return np.stack([source.read(i) for i in range(len(source))])


@pytest.fixture(scope="module")
def digits_data():
    return digits.load(DataParams(test_fraction=0.2), 0)


def test_registry():
    assert DATASETS["digits"] is digits.load


def test_digits_images_labels_ids(digits_data):
    d = digits_data
    assert d.name == "digits"
    images = all_pixels(d)
    assert images.shape == (1797, 8, 8, 1)
    assert images.dtype == np.uint8
    assert images.max() == 255 and images.min() == 0
    assert d.labels.dtype == np.int64
    assert sorted(set(d.labels.tolist())) == list(range(10))
    assert d.classes == [str(i) for i in range(10)]
    assert len(set(d.ids.tolist())) == 1797
    assert d.ids[0] == "digits-0000" and d.ids[-1] == "digits-1796"


def test_digits_pixels_are_rescaled_counts(digits_data):
    from sklearn.datasets import load_digits

    raw = load_digits().images
    # 16 -> 255, 8 -> 127.5 rounds to 128 (banker's rounding of .5 goes to the even 128), 0 -> 0
    images = all_pixels(digits_data)[..., 0]
    np.testing.assert_array_equal(images, np.rint(raw * 255 / 16).astype(np.uint8))
    assert images[raw == 16].min() == 255
    assert (images[raw == 0] == 0).all()


def test_digits_split_is_stratified(digits_data):
    d = digits_data
    assert set(d.splits.tolist()) == {"train", "test"}
    test = d.splits == "test"
    assert abs(test.sum() - round(0.2 * 1797)) <= 1
    for c in range(10):
        in_class = d.labels == c
        assert abs(test[in_class].sum() - 0.2 * in_class.sum()) <= 1, f"class {c}"


def test_digits_split_reproducible_per_seed():
    params = DataParams(test_fraction=0.3)
    a, b, c = digits.load(params, 7), digits.load(params, 7), digits.load(params, 8)
    np.testing.assert_array_equal(a.splits, b.splits)
    assert (a.splits != c.splits).any()
    np.testing.assert_array_equal(all_pixels(a), all_pixels(c))  # only the split depends on the seed


def test_test_fraction_zero_keeps_everything_in_train():
    d = digits.load(DataParams(test_fraction=0.0), 0)
    assert set(d.splits.tolist()) == {"train"}


def test_stratified_split_without_labels_still_splits():
    labels = np.full(20, UNLABELED)
    splits = digits.stratified_split(labels, 0.25, 0)
    assert (splits == "test").sum() == 5 and (splits == "train").sum() == 15


def raw(n=6, labels=None, splits=None, ids=None, channels=1):
    rng = np.random.default_rng(0)
    return RawDataset(
        name="toy",
        images=rng.integers(0, 256, size=(n, 4, 5, channels), dtype=np.uint8),
        labels=np.array(labels if labels is not None else [0, 1, UNLABELED, 1, 0, UNLABELED], dtype=np.int64),
        splits=np.array(splits if splits is not None else ["train", "train", "train", "test", "test", "extra"],
                        dtype=object),
        ids=np.array(ids if ids is not None else [f"s{i}" for i in range(n)], dtype=object),
        classes=["a", "b"],
        skipped={"broken.png": 1},
    )


def test_prepared_round_trip(tmp_path):
    data = raw(channels=3)
    meta = write_prepared(tmp_path / "prepared", data)
    assert meta["counts"] == {"extra": 1, "test": 2, "train": 3}
    assert meta["labeled"] == 4 and meta["num_samples"] == 6
    assert (meta["height"], meta["width"], meta["channels"]) == (4, 5, 3)
    assert meta["skipped"] == {"broken.png": 1}

    loaded = load_prepared(tmp_path / "prepared")
    assert isinstance(loaded, PreparedData)
    assert isinstance(loaded.images, np.memmap)
    np.testing.assert_array_equal(np.asarray(loaded.images), data.images)
    assert loaded.images.dtype == np.uint8
    assert loaded.ids.tolist() == data.ids.tolist()
    assert loaded.splits.tolist() == data.splits.tolist()
    assert loaded.labels.dtype == np.int64
    assert loaded.labels.tolist() == [0, 1, -1, 1, 0, -1]
    assert loaded.classes == ["a", "b"]
    assert loaded.meta == meta

    table = pq.read_table(tmp_path / "prepared" / SAMPLES_FILE)
    assert table.column("label").null_count == 2  # unknown labels are nulls on disk, not -1
    assert table.column("index").to_pylist() == list(range(6))


def test_prepared_indices(tmp_path):
    write_prepared(tmp_path / "p", raw())
    p = load_prepared(tmp_path / "p")
    assert p.indices().tolist() == [0, 1, 2, 3, 4, 5]
    assert p.indices(["train"]).tolist() == [0, 1, 2]
    assert p.indices(["test", "extra"]).tolist() == [3, 4, 5]
    assert p.indices(["extra"]).tolist() == [5]
    with pytest.raises(DataError, match="'validation'") as info:
        p.indices(["train", "validation"])
    assert "train" in str(info.value) and "test" in str(info.value)


def test_rewrite_replaces_previous_dataset(tmp_path):
    write_prepared(tmp_path / "p", raw())
    write_prepared(tmp_path / "p", raw(n=2, labels=[1, 0], splits=["train", "train"], ids=["x", "y"]))
    p = load_prepared(tmp_path / "p")
    assert p.ids.tolist() == ["x", "y"] and len(p.images) == 2
    assert sorted(f.name for f in (tmp_path).iterdir()) == ["p"]  # no temporary folders left


@pytest.mark.parametrize("missing", [IMAGES_FILE, SAMPLES_FILE, META_FILE])
def test_load_prepared_missing_file(tmp_path, missing):
    write_prepared(tmp_path / "p", raw())
    (tmp_path / "p" / missing).unlink()
    with pytest.raises(DataError, match=missing):
        load_prepared(tmp_path / "p")


def test_load_prepared_missing_folder(tmp_path):
    with pytest.raises(DataError):
        load_prepared(tmp_path / "nowhere")


def test_load_prepared_images_not_matching_samples(tmp_path):
    write_prepared(tmp_path / "p", raw())
    np.save(tmp_path / "p" / IMAGES_FILE, np.zeros((5, 4, 5, 1), dtype=np.uint8))
    with pytest.raises(DataError, match="does not match"):
        load_prepared(tmp_path / "p")


def test_prepare_writes_digits(tmp_path):
    meta = prepare(DataParams(test_fraction=0.5), 0, tmp_path / "p")
    assert meta["name"] == "digits" and meta["num_samples"] == 1797 and meta["labeled"] == 1797
    assert abs(meta["counts"]["test"] - 1797 / 2) <= 1
    p = load_prepared(tmp_path / "p")
    assert p.images.shape == (1797, 8, 8, 1)


def test_raw_dataset_rejects_duplicate_ids():
    with pytest.raises(ValueError, match="unique"):
        raw(ids=["a", "b", "c", "a", "d", "e"])


def test_raw_dataset_rejects_wrong_dtype_and_shape():
    good = raw()
    with pytest.raises(ValueError, match="uint8"):
        RawDataset("toy", good.images.astype(np.float32), good.labels, good.splits, good.ids, good.classes)
    with pytest.raises(ValueError, match="uint8"):
        RawDataset("toy", good.images[..., 0], good.labels, good.splits, good.ids, good.classes)


def test_raw_dataset_rejects_length_mismatch():
    good = raw()
    with pytest.raises(ValueError, match="labels"):
        RawDataset("toy", good.images, good.labels[:5], good.splits, good.ids, good.classes)
    with pytest.raises(ValueError, match="splits"):
        RawDataset("toy", good.images, good.labels, good.splits[:5], good.ids, good.classes)
