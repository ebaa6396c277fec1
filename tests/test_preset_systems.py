"""Each replaced system's preset starts and runs a few steps of every stage, as ``dvc repro`` would
(the commands of dvc.yaml, in-process), with tiny overrides and a stand-in of its dataset's kind:
digits for the small grayscale presets, a small folder of colour images for the photo presets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imageclust import preset

STAGES = ("check_params", "download", "pretrain", "extract", "extract_spaces", "cluster", "finetune", "evaluate")
FEW = {
    "pretrain.epochs": 1,
    "pretrain.batch_size": 8,
    "pretrain.warmup_epochs": 0,
    "extract.batch_size": 8,
    "extract.num_workers": 0,
    "cluster.k": 3,
    "finetune.batch_size": 8,
    "device": "cpu",
}
PHOTOS = "photos"  # replaced by the colour folder made below
# what each system's preset needs on top of FEW to run in seconds: its dataset's stand-in, and the
# sizes that only fit the real dataset (K = 100, PCA to 100-256 dimensions, a queue of 8,192)
TINY = {
    "temi_dinov2": {
        "data.name": "image_folder",
        "data.root": PHOTOS,
        "extract.image_size": 28,
        "extract.dinov2.model": "tiny-dinov2",
        "finetune.temi.epochs": 1,
        "finetune.temi.num_neighbors": 3,
    },
    "deepcluster": {
        "data.name": "digits",
        "data.max_per_split": 30,
        "data.image_size": 16,
        "finetune.deepcluster.epochs": 1,
    },
    "simclr_stl10": {"data.name": "image_folder", "data.root": PHOTOS, "data.image_size": 32, "cluster.pca_dim": 8},
    "moco_spectral": {
        "data.name": "digits",
        "data.max_per_split": 30,
        "data.root": None,
        "pretrain.moco.queue_size": 16,
        "cluster.spectral.num_neighbors": 5,
        "finetune.spectral.epochs": 1,
        "finetune.spectral.num_neighbors": 5,
    },
    "deepcluster_folder": {
        "data.root": PHOTOS,
        "data.checksum": None,
        "data.image_size": 32,
        "cluster.pca_dim": 8,
        "finetune.deepcluster.pca_dim": 8,
        "finetune.deepcluster.epochs": 1,
    },
}


def test_every_system_preset_is_tested_here():
    assert set(TINY) <= set(preset.available())


def _photos(root: Path) -> None:
    """Three classes of flat-coloured 40-px images with noise, in train and test, and unlabelled ones."""
    rng = np.random.default_rng(0)
    colours = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
    for split, per_class in (("train", 8), ("test", 3)):
        for name, colour in colours.items():
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = np.clip(np.array(colour) + rng.normal(0, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    (root / "unlabeled").mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / "unlabeled" / f"{i}.png")


def _tiny_dinov2(folder: Path) -> None:
    from transformers import Dinov2Config, Dinov2Model

    Dinov2Model(
        Dinov2Config(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=28,
            patch_size=14,
        )
    ).save_pretrained(folder)


@pytest.mark.parametrize("name", sorted(TINY))
def test_system_preset_runs_every_stage_a_few_steps(name, tmp_path, stage_project):
    project = stage_project({**preset.load_preset(name), **FEW, **TINY[name]})
    params = project.params
    if params["data"]["root"] == PHOTOS:
        _photos(tmp_path / PHOTOS)
    if params["extract"]["backbone"] == "dinov2":
        _tiny_dinov2(tmp_path / "tiny-dinov2")
    project.run(*STAGES)
    evaluated = json.loads((tmp_path / "metrics/evaluate.json").read_text())
    assert 0 <= evaluated["finetune"]["all"]["acc"] <= 1
    tuned = json.loads((tmp_path / "metrics/finetune.json").read_text())
    assert tuned["method"] == params["finetune"]["method"] and tuned["k"] == 3
    pretrained = json.loads((tmp_path / "metrics/pretrain.json").read_text())
    if params["pretrain"]["method"] != "none":
        assert pretrained["epochs"] == 1 and pretrained["cost"]["images_per_s"] > 0
    elif params["extract"]["backbone"] == "encoder":  # DeepCluster from the network's random weights
        assert pretrained["random_init"] and pretrained["backbone"] == params["pretrain"]["backbone"]
    extracted = json.loads((tmp_path / "metrics/extract.json").read_text())
    assert extracted["backbone"] == params["extract"]["backbone"] and extracted["rows"] == tuned_rows(tmp_path)


def tuned_rows(project: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_metadata(project / "artifacts/finetune/assignments.parquet").num_rows


def test_a_guard_that_keeps_the_cluster_stage_predicts_with_it(tmp_path, stage_project, monkeypatch):
    """Spectral fine-tuning after MoCo, its guard made to judge every clustering worse than the
    cluster stage's: the finetune stage returns the cluster stage's assignment and says so, and
    ``predict`` sorts new images by the cluster stage's model, not by the encoder it did not keep."""
    import shutil

    from imageclust.data.prepared import load_prepared
    from imageclust.finetune import guard
    from imageclust.predict import Predictor
    from imageclust.tables import read_assignments

    judged = iter([1.0])  # the cluster stage's assignment is judged first, every clustering after it 0
    monkeypatch.setattr(guard.Referee, "score", lambda self, labels: next(judged, 0.0))
    project = stage_project({**preset.load_preset("moco_spectral"), **FEW, **TINY["moco_spectral"]})
    project.run(*STAGES)
    shutil.copy(Path(__file__).resolve().parents[1] / "dvc.yaml", tmp_path / "dvc.yaml")  # where predict looks
    tuned = json.loads((tmp_path / "metrics/finetune.json").read_text())
    assert tuned["guard_kept_cluster_stage"] and tuned["guard_start_score"] == 1.0
    stage = read_assignments(tmp_path / "artifacts/cluster/assignments.parquet")
    final = read_assignments(tmp_path / "artifacts/finetune/assignments.parquet")
    np.testing.assert_array_equal(final.clusters, stage.clusters)
    assert not (tmp_path / "artifacts/finetune/encoder.pt").exists()

    prepared = load_prepared(tmp_path / "data/prepared")
    (tmp_path / "new").mkdir()
    rows = np.arange(0, len(prepared.ids), 7)
    for row in rows:
        Image.fromarray(prepared.images[row][..., 0]).save(tmp_path / "new" / f"{prepared.ids[row]}.png")
    predicted = Predictor(tmp_path).predict(sorted((tmp_path / "new").iterdir()))
    by_id = dict(zip(stage.ids, stage.clusters))
    expected = [by_id[path.stem] for path in predicted.paths]
    np.testing.assert_array_equal(predicted.clusters, expected)
