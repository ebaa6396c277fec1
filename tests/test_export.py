"""export: one row per sample with its final and earlier clusters, joined on ids, as CSV and parquet."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from imageclust.bundle import MODEL_STAGES
from imageclust.data.prepared import RawDataset, load_prepared, write_prepared
from imageclust.errors import DataError
from imageclust.export import CSV_FILE, PARQUET_FILE, assignments_frame, write_export
from imageclust.imports import REPO
from imageclust.tables import UNLABELED, Assignments, write_assignments

IDS = np.array(["a.png", "b.png", "sub/c.png", "d.png"], dtype=object)
LABELS = np.array([0, 1, 1, UNLABELED])
SPLITS = np.array(["train", "train", "test", "test"], dtype=object)


def prepared(tmp_path):
    images = np.zeros((4, 4, 4, 1), dtype=np.uint8)
    write_prepared(tmp_path / "prepared", RawDataset("toy", images, LABELS, SPLITS, IDS, ["cat", "dog"]))
    return load_prepared(tmp_path / "prepared")


def assignments(order, clusters, confidence) -> Assignments:
    order = np.asarray(order)
    return Assignments(
        IDS[order],
        SPLITS[order],
        LABELS[order],
        np.asarray(clusters),
        np.asarray(confidence, np.float32),
        num_clusters=2,
    )


def test_frame_joins_sources_on_ids(tmp_path):
    data = prepared(tmp_path)
    first = assignments([3, 2, 1, 0], [0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4])  # another row order
    final = assignments([0, 1, 2, 3], [1, 0, 0, 1], [0.9, 0.8, 0.7, 0.6])
    frame = assignments_frame(data, {"cluster": first, "finetune": final})
    assert list(frame.columns) == [
        "id",
        "index",
        "split",
        "label",
        "class",
        "cluster",
        "confidence",
        "matched_class",
        "cluster_stage_cluster",
        "cluster_stage_confidence",
    ]
    assert frame["id"].tolist() == IDS.tolist() and frame["index"].tolist() == [0, 1, 2, 3]
    assert frame["cluster"].tolist() == [1, 0, 0, 1]
    assert frame["cluster_stage_cluster"].tolist() == [1, 1, 0, 0]
    np.testing.assert_allclose(frame["cluster_stage_confidence"], [0.4, 0.3, 0.2, 0.1], rtol=1e-6)
    # cluster 1 holds the cat, cluster 0 both dogs: matched one-to-one
    assert frame["matched_class"].tolist() == ["cat", "dog", "dog", "cat"]
    assert frame["label"].isna().tolist() == [False, False, False, True]
    assert frame["class"].tolist()[:3] == ["cat", "dog", "dog"] and pd.isna(frame["class"].iloc[3])


def test_written_files_agree(tmp_path):
    data = prepared(tmp_path)
    frame = assignments_frame(data, {"finetune": assignments([0, 1, 2, 3], [1, 0, 0, 1], [1, 1, 1, 1])})
    write_export(tmp_path / "export", frame)
    from_parquet = pd.read_parquet(tmp_path / "export" / PARQUET_FILE)
    from_csv = pd.read_csv(tmp_path / "export" / CSV_FILE, keep_default_na=False)
    assert from_parquet["id"].tolist() == from_csv["id"].tolist() == IDS.tolist()
    assert from_csv["label"].tolist() == ["0", "1", "1", ""]  # unknown: an empty cell
    assert from_parquet["cluster"].tolist() == from_csv["cluster"].tolist()


def test_a_stale_source_is_refused(tmp_path):
    data = prepared(tmp_path)
    stale = Assignments(
        np.array(["a.png", "zzz.png"], dtype=object), SPLITS[:2], LABELS[:2], np.array([0, 1]), np.ones(2, np.float32)
    )
    with pytest.raises(DataError, match="zzz.png"):
        assignments_frame(data, {"finetune": stale})


def export_stage(tmp_path, source, out) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "stages.export",
            "--prepared",
            str(tmp_path / "prepared"),
            "--source",
            f"finetune={source}",
            "--out",
            str(out),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_stage_end_to_end(tmp_path):
    prepared(tmp_path)
    write_assignments(tmp_path / "f.parquet", assignments([0, 1, 2, 3], [1, 0, 0, 1], [1, 1, 1, 1]))
    run = export_stage(tmp_path, tmp_path / "f.parquet", tmp_path / "export")
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [CSV_FILE, PARQUET_FILE]
    missing = export_stage(tmp_path, tmp_path / "absent.parquet", tmp_path / "e2")
    assert missing.returncode == 2 and "absent.parquet" in missing.stderr and not (tmp_path / "e2").exists()


def test_the_export_stage_depends_on_every_param_that_made_the_models():
    # bundle.json records the params that made the models; a key missing here would let it go stale
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    export = set(stages["export"]["params"])
    for stage in MODEL_STAGES:
        missing = {key for key in stages[stage]["params"] if key not in export and key.split(".")[0] not in export}
        assert not missing, f"dvc.yaml: the export stage's params lack {stage}'s {sorted(missing)}"
