"""Feature and assignment tables, atomic writes and file digests."""

import json
import os
import stat

import numpy as np
import pyarrow.parquet as pq
import pytest

from imageclust.errors import DataError
from imageclust.io import (
    atomic_dir,
    atomic_path,
    digest_files,
    load_torch,
    read_json,
    save_npy,
    save_torch,
    write_json,
)
from imageclust.tables import (
    UNLABELED,
    Assignments,
    FeatureTable,
    feature_shards,
    read_assignments,
    read_features,
    write_assignments,
    write_features,
)


class Evil:
    """An arbitrary class: unpickling it could run code, so checkpoints must not contain it."""


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def feature_table(n=8, d=3):
    rng = np.random.default_rng(0)
    return FeatureTable(
        ids=np.array([f"id-{i:02d}" for i in range(n)][::-1], dtype=object),  # not sorted: order must be kept
        splits=np.array(["train", "test"] * (n // 2), dtype=object),
        labels=np.array([0, UNLABELED, 2, 1, UNLABELED, 0, 1, 2][:n], dtype=np.int64),
        vectors=rng.normal(size=(n, d)).astype(np.float32),
    )


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------- features


def test_features_round_trip_in_shards(tmp_path):
    table = feature_table()
    write_features(tmp_path / "f", table, {"backbone": "pixels"}, shard_rows=3)
    assert listing(tmp_path / "f") == ["_meta.json", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [pq.read_metadata(p).num_rows for p in feature_shards(tmp_path / "f")] == [3, 3, 2]
    back = read_features(tmp_path / "f")
    assert len(back) == 8
    assert back.ids.tolist() == table.ids.tolist()
    assert back.splits.tolist() == table.splits.tolist()
    assert back.labels.tolist() == [0, -1, 2, 1, -1, 0, 1, 2]
    assert back.labels.dtype == np.int64
    assert back.vectors.dtype == np.float32 and back.vectors.shape == (8, 3)
    np.testing.assert_array_equal(back.vectors, table.vectors)
    assert read_json(tmp_path / "f" / "_meta.json") == {
        "backbone": "pixels",
        "rows": 8,
        "dim": 3,
        "dtype": "float32",
        "shards": [{"file": f"part-0000{i}.parquet", "rows": r} for i, r in enumerate([3, 3, 2])],
    }
    # unknown labels are nulls in parquet
    assert pq.read_table(tmp_path / "f" / "part-00000.parquet").column("label").null_count == 1


def test_features_float64_input_stored_as_float32(tmp_path):
    table = feature_table(n=4)
    table.vectors = table.vectors.astype(np.float64) + 1e-12
    write_features(tmp_path / "f", table, {})
    back = read_features(tmp_path / "f")
    assert back.vectors.dtype == np.float32
    np.testing.assert_allclose(back.vectors, table.vectors, rtol=1e-6)


def test_features_single_shard_by_default_and_all_labels_known(tmp_path):
    table = feature_table(n=4)
    table.labels = np.array([3, 1, 0, 2])
    write_features(tmp_path / "f", table, {})
    assert len(feature_shards(tmp_path / "f")) == 1
    assert read_features(tmp_path / "f").labels.tolist() == [3, 1, 0, 2]


def test_rewriting_features_drops_old_shards(tmp_path):
    write_features(tmp_path / "f", feature_table(), {}, shard_rows=2)
    write_features(tmp_path / "f", feature_table(n=4), {}, shard_rows=100)
    assert len(feature_shards(tmp_path / "f")) == 1
    assert len(read_features(tmp_path / "f")) == 4
    assert listing(tmp_path) == ["f"]


def test_missing_shards_raise_data_error(tmp_path):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "_meta.json").write_text("{}")
    with pytest.raises(DataError, match="no feature shards"):
        read_features(tmp_path / "f")
    with pytest.raises(DataError):
        read_features(tmp_path / "absent")


def test_feature_table_select():
    table = feature_table()
    part = table.select(table.labels == UNLABELED)
    assert part.ids.tolist() == ["id-06", "id-03"]
    np.testing.assert_array_equal(part.vectors, table.vectors[[1, 4]])


# ---------------------------------------------------------------- assignments


def test_assignments_round_trip(tmp_path):
    a = Assignments(
        ids=np.array(["b", "a", "c"], dtype=object),
        splits=np.array(["train", "test", "train"], dtype=object),
        labels=np.array([1, UNLABELED, 0]),
        clusters=np.array([2, 0, 1], dtype=np.int32),
        confidence=np.array([0.5, 0.25, 1.0]),
    )
    write_assignments(tmp_path / "sub" / "a.parquet", a)
    assert listing(tmp_path / "sub") == ["a.parquet"]
    back = read_assignments(tmp_path / "sub" / "a.parquet")
    assert len(back) == 3
    assert back.ids.tolist() == ["b", "a", "c"]
    assert back.splits.tolist() == ["train", "test", "train"]
    assert back.labels.tolist() == [1, -1, 0]
    assert back.clusters.tolist() == [2, 0, 1] and back.clusters.dtype == np.int64
    assert back.confidence.dtype == np.float32
    np.testing.assert_array_equal(back.confidence, [0.5, 0.25, 1.0])


# ---------------------------------------------------------------- atomic writes


def test_atomic_path_success_replaces(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_text("new")
        assert target.read_text() == "old"  # not visible before the block ends
    assert target.read_text() == "new"
    assert listing(tmp_path) == ["out.txt"]


def test_atomic_path_failure_keeps_old_content(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["out.txt"]


def test_atomic_path_failure_without_previous_file(tmp_path):
    with pytest.raises(KeyError):
        with atomic_path(tmp_path / "new" / "x.bin") as tmp:
            tmp.write_bytes(b"123")
            raise KeyError("x")
    assert listing(tmp_path / "new") == []


def test_atomic_dir_success_replaces_whole_folder(tmp_path):
    target = tmp_path / "d"
    target.mkdir()
    (target / "stale.txt").write_text("stale")
    with atomic_dir(target) as tmp:
        (tmp / "fresh.txt").write_text("fresh")
        assert (target / "stale.txt").exists()
    assert listing(target) == ["fresh.txt"]
    assert listing(tmp_path) == ["d"]


def test_atomic_dir_failure_keeps_old_folder(tmp_path):
    target = tmp_path / "d"
    target.mkdir()
    (target / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("new")
            (tmp / "b.txt").write_text("new")
            raise RuntimeError("killed")
    assert listing(target) == ["a.txt"]
    assert (target / "a.txt").read_text() == "old"
    assert listing(tmp_path) == ["d"]


def test_atomic_dir_failure_without_previous_folder(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "a.txt").write_text("x")
            raise RuntimeError
    assert listing(tmp_path) == []


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_are_readable_by_others(tmp_path, umask022):
    write_json(tmp_path / "m.json", {"a": 1})
    save_npy(tmp_path / "x.npy", np.arange(3))
    save_torch(tmp_path / "t.pt", {"w": np.int64(1).item()})
    write_features(tmp_path / "f", feature_table(), {}, shard_rows=3)
    write_assignments(
        tmp_path / "a.parquet",
        Assignments(
            np.array(["a"], dtype=object),
            np.array(["train"], dtype=object),
            np.array([0]),
            np.array([0]),
            np.array([1.0]),
        ),
    )
    paths = [
        tmp_path / "m.json",
        tmp_path / "x.npy",
        tmp_path / "t.pt",
        tmp_path / "a.parquet",
        tmp_path / "f",
        *(tmp_path / "f").iterdir(),
    ]
    for path in paths:
        assert mode(path) & 0o044 == 0o044, f"{path.name}: {oct(mode(path))}"
        assert mode(path) & 0o022 == 0, f"{path.name}: {oct(mode(path))}"  # umask respected
    assert mode(tmp_path / "f") & 0o055 == 0o055  # folders are listable


def test_json_and_npy_and_torch_round_trips(tmp_path):
    from pathlib import Path

    write_json(tmp_path / "m.json", {"b": np.float32(0.5), "a": np.arange(2), "p": Path("x/y")})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": [0, 1], "b": 0.5, "p": "x/y"}
    with pytest.raises(TypeError):
        write_json(tmp_path / "bad.json", {"s": {1, 2}})
    assert not (tmp_path / "bad.json").exists()
    assert listing(tmp_path) == ["m.json"]
    save_npy(tmp_path / "x.npy", np.arange(4, dtype=np.int16))
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), np.arange(4, dtype=np.int16))
    import torch

    save_torch(tmp_path / "t.pt", {"w": torch.ones(2), "name": "small_cnn", "n": 3})
    obj = load_torch(tmp_path / "t.pt")
    assert obj["name"] == "small_cnn" and obj["n"] == 3 and torch.equal(obj["w"], torch.ones(2))


def test_load_torch_refuses_arbitrary_objects(tmp_path):
    import torch

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    for ours in (True, False):  # a third-party file too: weights_only, never pickled code
        with pytest.raises(DataError, match=r"evil.pt: refused: not a file of tensors, numbers and strings"):
            load_torch(tmp_path / "evil.pt", ours=ours)
    # inside a file shaped as ours, with a matching sha256: the inner load is weights_only too
    import hashlib
    import io

    buffer = io.BytesIO()
    torch.save({"x": Evil()}, buffer)
    payload = buffer.getvalue()
    torch.save(
        {
            "format": "imageclust-checkpoint-1",
            "sha256": hashlib.sha256(payload).hexdigest(),
            "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8),
        },
        tmp_path / "wrapped.pt",
    )
    with pytest.raises(DataError, match="refused: not a file of tensors"):
        load_torch(tmp_path / "wrapped.pt")


def test_load_torch_refuses_an_altered_damaged_or_foreign_checkpoint(tmp_path):
    import torch

    save_torch(tmp_path / "t.pt", {"w": torch.arange(1000.0)})
    data = bytearray((tmp_path / "t.pt").read_bytes())
    at = data.find(torch.arange(1000.0).numpy().tobytes()[400:408])  # one weight, inside the payload
    assert at > 0
    data[at] ^= 0x40
    (tmp_path / "altered.pt").write_bytes(bytes(data))
    with pytest.raises(DataError, match="altered.pt: refused: its contents do not match the sha256"):
        load_torch(tmp_path / "altered.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "t.pt").read_bytes()[:300])
    with pytest.raises(DataError, match="cut.pt: refused: not a file of tensors"):
        load_torch(tmp_path / "cut.pt")
    torch.save({"w": torch.ones(2)}, tmp_path / "plain.pt")  # loads safely, but nothing vouches for it
    with pytest.raises(DataError, match="plain.pt: refused: not a checkpoint this pipeline wrote"):
        load_torch(tmp_path / "plain.pt")
    assert torch.equal(load_torch(tmp_path / "plain.pt", ours=False)["w"], torch.ones(2))


# ---------------------------------------------------------------- digests


def test_digest_changes_with_one_byte_and_ignores_unmatched_files(tmp_path):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "a.py").write_bytes(b"print(1)\n")
    (d / "sub" / "b.py").write_bytes(b"x = 2\n")
    (d / "notes.txt").write_text("ignored")
    base = digest_files([d], pattern="*.py")
    assert len(base) == 64 and int(base, 16) >= 0
    assert digest_files([d], pattern="*.py") == base  # deterministic

    (d / "notes.txt").write_text("changed, still ignored")
    (d / "sub" / "cache.pyc").write_bytes(b"\x00")
    assert digest_files([d], pattern="*.py") == base

    (d / "sub" / "b.py").write_bytes(b"x = 3\n")  # one byte
    changed = digest_files([d], pattern="*.py")
    assert changed != base
    (d / "sub" / "b.py").write_bytes(b"x = 2\n")
    assert digest_files([d], pattern="*.py") == base

    # the default pattern takes every file, so the .txt now counts
    assert digest_files([d]) != base


def test_digest_covers_file_names_and_single_files(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"same")
    (tmp_path / "b.bin").write_bytes(b"same")
    assert digest_files([tmp_path / "a.bin"]) != digest_files([tmp_path / "b.bin"])
    assert digest_files([tmp_path / "a.bin", tmp_path / "b.bin"]) != digest_files([tmp_path / "a.bin"])
