"""The extract stage: preprocessing, shards streamed to disk, resuming, several processes, plain readers."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from imageclust.config import GlobalParams
from imageclust.data.prepared import IMAGES_FILE, load_prepared
from imageclust.errors import DataError
from imageclust.features import stage as stage_module
from imageclust.features.params import ExtractParams
from imageclust.features.preprocess import Preprocess, input_side
from imageclust.features.registry import EXTRACTORS
from imageclust.features.shards import RUN_FILE, assigned, plan_shards
from imageclust.features.stage import _loader, extract_features
from imageclust.tables import FEATURES_META, FeatureShardWriter, read_features, read_features_meta

REPO = Path(__file__).resolve().parents[2]
CPU = GlobalParams(device="cpu")


def extract(prepared_dir, out: Path, encoder=None, **params):
    params = ExtractParams(**{"backbone": "pixels", "num_workers": 0, **params})
    return extract_features(prepared_dir, encoder, out / "features", out / "work", CPU, params)


# --- preprocessing -------------------------------------------------------------------------------


def test_input_side_rounds_to_the_patch_multiple():
    assert input_side(None, None, 1) is None  # native size
    assert input_side(None, 224, 1) == 224
    assert input_side(96, 224, 1) == 96
    assert input_side(100, 224, 14) == 98
    assert input_side(5, 224, 14) == 14


@pytest.mark.parametrize(
    "prepared, own, multiple, side",
    [
        (32, 224, 1, 160),  # CIFAR: scaled up to 160, not to the backbone's 224
        (96, 224, 1, 160),  # STL-10
        (200, 224, 1, 200),  # between: the prepared side, not scaled up
        (256, 224, 1, 224),  # photos: the side the backbone was trained at
        (256, 260, 1, 256),  # EfficientNet-Lite2's own 260: the photos' 256
        (500, 96, 1, 96),  # a backbone trained below 160 keeps its own
        (200, 224, 14, 196),  # ViT: rounded to its patch size
    ],
)
def test_auto_input_side_is_the_prepared_side_between_160_and_the_backbones_own(prepared, own, multiple, side):
    assert input_side("auto", own, multiple, prepared) == side


def test_auto_input_side_keeps_the_native_size_without_a_side_of_its_own():
    assert input_side("auto", None, 1, 12) is None  # the encoder and pixels
    assert input_side("auto", 224, 1, None) == 224  # no prepared side given: the backbone's own


@pytest.mark.parametrize("value", [4, 2000, 2.5, True, "big"])
def test_a_bad_image_size_is_refused(value):
    with pytest.raises(ValueError, match="image_size"):
        ExtractParams(image_size=value)


def test_preprocess_gray_to_rgb_resize_and_normalise():
    pixels = torch.full((2, 8, 8, 1), 255, dtype=torch.uint8)
    pixels[1] = 0
    out = Preprocess(1, 3, 16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))(pixels)
    assert out.shape == (2, 3, 16, 16)
    torch.testing.assert_close(out[0], torch.full((3, 16, 16), 2.0))  # (1 - 0.5) / 0.25
    torch.testing.assert_close(out[1], torch.full((3, 16, 16), -2.0))


def test_preprocess_rgb_to_gray_uses_luma():
    pixels = torch.zeros((1, 2, 2, 3), dtype=torch.uint8)
    pixels[..., 1] = 255  # pure green
    out = Preprocess(3, 1, None, mean=(0.0,), std=(1.0,))(pixels)
    torch.testing.assert_close(out, torch.full((1, 1, 2, 2), 0.587))


def test_preprocess_keeps_the_centre_square_of_a_wide_image():
    pixels = torch.zeros((1, 4, 8, 1), dtype=torch.uint8)
    pixels[:, :, 2:6] = 255  # a white centre square between black side bands
    out = Preprocess(1, 1, 4, mean=(0.0,), std=(1.0,))(pixels)
    assert out.shape == (1, 1, 4, 4)
    torch.testing.assert_close(out, torch.ones((1, 1, 4, 4)))


def test_preprocess_native_size_is_untouched():
    pixels = torch.randint(0, 256, (3, 8, 8, 1), dtype=torch.uint8)
    out = Preprocess(1, None, None, mean=(0.0,), std=(1.0,))(pixels)
    torch.testing.assert_close(out, pixels.permute(0, 3, 1, 2).float() / 255)


# --- shards ----------------------------------------------------------------------------------------


def test_shard_plan_and_share_of_each_process():
    shards = plan_shards(25, 10)
    assert [(s.start, s.stop) for s in shards] == [(0, 10), (10, 20), (20, 25)]
    assert [s.index for s in assigned(shards, 0, 2)] == [0, 2]
    assert [s.index for s in assigned(shards, 1, 2)] == [1]
    assert plan_shards(0, 10) == []


@pytest.mark.parametrize("loaded", [None, "onnxruntime", "openvino"])
def test_loader_processes_fork_only_a_stage_without_runtimes_that_forbid_it(prepared_dir, monkeypatch, loaded):
    """Forking a process that holds ONNX Runtime's or OpenVINO's thread pools is unsafe: a fork server."""
    for name in stage_module.NOT_FORK_SAFE:
        monkeypatch.delitem(sys.modules, name, raising=False)
    if loaded:
        monkeypatch.setitem(sys.modules, loaded, object())
    shards = plan_shards(96, 40)
    loader = _loader(prepared_dir / IMAGES_FILE, shards, 16, 1, torch.device("cpu"))
    context = loader.multiprocessing_context
    assert (context.get_start_method() if context else None) == ("forkserver" if loaded else None)
    if loaded:  # never fork this test process: other tests may have loaded the runtimes hidden here
        assert [start for _, start, _, _ in loader] == [0, 16, 32, 40, 56, 72, 80]  # the workers read every batch
    assert _loader(prepared_dir / IMAGES_FILE, shards, 16, 0, torch.device("cpu")).multiprocessing_context is None


def test_pixels_written_in_shards_readable_with_plain_pyarrow_and_pandas(prepared_dir, tmp_path):
    summary = extract(prepared_dir, tmp_path, shard_rows=40, batch_size=16)
    data = load_prepared(prepared_dir)
    folder = tmp_path / "features"
    assert sorted(p.name for p in folder.iterdir()) == [
        FEATURES_META,
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    meta = read_features_meta(folder)
    assert meta["rows"] == 96 and meta["dim"] == 64 and meta["dtype"] == "float32"
    assert [s["rows"] for s in meta["shards"]] == [40, 40, 16]
    assert summary["rows"] == 96 and summary["shards"] == 3 and summary["shards_resumed"] == 0

    # no project code: pyarrow reads the folder (it skips _meta.json), pandas too
    table = pq.read_table(folder)
    assert table.column_names == ["id", "split", "label", "vector"]
    frame = pd.read_parquet(folder)
    assert frame["id"].tolist() == data.ids.tolist()
    vectors = np.stack(frame["vector"].to_numpy())
    np.testing.assert_allclose(vectors, data.images.reshape(96, -1) / 255.0, rtol=1e-6)
    assert frame["label"].tolist() == data.labels.tolist()

    back = read_features(folder)
    np.testing.assert_array_equal(back.vectors, vectors.astype(np.float32))
    test_only = read_features(folder, splits=["test"])
    assert set(test_only.splits) == {"test"} and len(test_only) == int((data.splits == "test").sum())
    np.testing.assert_array_equal(test_only.vectors, back.vectors[back.splits == "test"])


def test_float16_shards(prepared_dir, tmp_path):
    extract(prepared_dir, tmp_path, dtype="float16")
    shard = tmp_path / "features" / "part-00000.parquet"
    assert str(pq.read_schema(shard).field("vector").type.value_type) == "halffloat"
    back = read_features(tmp_path / "features")
    assert back.vectors.dtype == np.float32
    np.testing.assert_allclose(back.vectors, load_prepared(prepared_dir).images.reshape(96, -1) / 255.0, atol=1e-3)


def test_resize_and_channels_for_pixels(prepared_dir, tmp_path):
    summary = extract(prepared_dir, tmp_path, image_size=16)
    assert summary["dim"] == 16 * 16 and summary["input_size"] == 16


def test_flip_average_is_the_mean_of_each_image_and_its_mirror(prepared_dir, tmp_path):
    extract(prepared_dir, tmp_path / "plain", batch_size=16)
    extract(prepared_dir, tmp_path / "flip", batch_size=16, flip_average=True)
    images = load_prepared(prepared_dir).images.astype(np.float32) / 255.0  # (n, h, w, c)
    assert not np.allclose(images, images[:, :, ::-1])  # the fixture's images are not symmetric
    expected = ((images + images[:, :, ::-1]) / 2).transpose(0, 3, 1, 2).reshape(len(images), -1)
    plain = read_features(tmp_path / "plain" / "features").vectors
    flipped = read_features(tmp_path / "flip" / "features").vectors
    np.testing.assert_allclose(plain, images.transpose(0, 3, 1, 2).reshape(len(images), -1), rtol=1e-6)
    np.testing.assert_allclose(flipped, expected, rtol=1e-6)
    assert read_features_meta(tmp_path / "flip" / "features")["flip_average"] is True
    assert read_features_meta(tmp_path / "plain" / "features")["flip_average"] is False


def test_auto_side_reads_the_prepared_images(prepared_dir, tmp_path):
    # A pretrained backbone (random weights) sees the 12-px images at 160, not its own 224.
    options = {"model": "resnet18", "weights": None}
    summary = extract(prepared_dir, tmp_path, backbone="torchvision", torchvision=options, image_size="auto")
    assert summary["input_size"] == 160
    assert extract(prepared_dir, tmp_path / "pixels", image_size="auto")["input_size"] is None  # native


def test_interrupted_extraction_resumes_from_finished_shards(prepared_dir, tmp_path, monkeypatch):
    extract(prepared_dir, tmp_path / "whole", shard_rows=30, batch_size=10)
    calls = {"n": 0}
    real_write = FeatureShardWriter.write

    def killed_in_third_shard(self, *args):
        calls["n"] += 1
        if calls["n"] == 8:  # shards of 3 batches: the kill lands inside the third shard
            raise KeyboardInterrupt("killed")
        real_write(self, *args)

    monkeypatch.setattr(FeatureShardWriter, "write", killed_in_third_shard)
    with pytest.raises(KeyboardInterrupt):
        extract(prepared_dir, tmp_path / "killed", shard_rows=30, batch_size=10)
    work = tmp_path / "killed" / "work"
    assert not (tmp_path / "killed" / "features").exists()  # nothing for cluster to read
    assert sorted(p.name for p in work.iterdir()) == ["part-00000.parquet", "part-00001.parquet", RUN_FILE]

    monkeypatch.setattr(FeatureShardWriter, "write", real_write)
    summary = extract(prepared_dir, tmp_path / "killed", shard_rows=30, batch_size=10)
    assert summary["shards_resumed"] == 2 and summary["shards"] == 4
    whole, resumed = read_features(tmp_path / "whole" / "features"), read_features(tmp_path / "killed" / "features")
    assert resumed.ids.tolist() == whole.ids.tolist()
    np.testing.assert_array_equal(resumed.vectors, whole.vectors)
    assert sorted(p.name for p in work.iterdir()) == [RUN_FILE]  # the shards moved into the output


def test_shards_of_another_run_are_not_resumed(prepared_dir, tmp_path):
    extract(prepared_dir, tmp_path, shard_rows=30)
    work = tmp_path / "work"
    stale = work / "part-00000.parquet"
    (tmp_path / "features" / "part-00000.parquet").rename(stale)  # as if a run had been killed
    (work / ".part-00001.parquet.abc.tmp").write_bytes(b"half a shard")
    summary = extract(prepared_dir, tmp_path, shard_rows=30, image_size=12)
    assert summary["shards_resumed"] == 0 and summary["dim"] == 144
    assert not list(work.glob(".*.tmp"))


def test_same_run_resumes_and_cleans_temporary_files(prepared_dir, tmp_path):
    extract(prepared_dir, tmp_path, shard_rows=30)
    work = tmp_path / "work"
    (tmp_path / "features" / "part-00001.parquet").rename(work / "part-00001.parquet")
    (work / ".part-00002.parquet.abc.tmp").write_bytes(b"half a shard")
    summary = extract(prepared_dir, tmp_path, shard_rows=30)
    assert summary["shards_resumed"] == 1
    assert not list(work.glob(".*.tmp"))


def test_non_finite_features_are_refused(prepared_dir, tmp_path, monkeypatch):
    real = EXTRACTORS["pixels"]

    def nan_pixels(params, encoder_path):
        backbone = real.build(params, encoder_path)
        backbone.model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Threshold(0.5, float("nan")))
        return backbone

    monkeypatch.setitem(EXTRACTORS, "pixels", dataclasses.replace(real, build=nan_pixels))
    with pytest.raises(DataError, match="non-finite features for sample"):
        extract(prepared_dir, tmp_path)
    assert not (tmp_path / "features").exists()


def test_encoder_backbone_and_skipped_pretraining(prepared_dir, tmp_path):
    from imageclust.pretrain import loop
    from imageclust.pretrain.params import PretrainParams
    from imageclust.pretrain.stage import skip_pretraining

    loop.pretrain(
        prepared_dir,
        tmp_path / "encoder.pt",
        tmp_path / "ckpt",
        tmp_path / "live",
        CPU,
        ["train"],
        PretrainParams(epochs=1, batch_size=32, warmup_epochs=0),
    )
    summary = extract(prepared_dir, tmp_path / "a", encoder=tmp_path / "encoder.pt", backbone="encoder")
    assert summary["dim"] == 128
    assert read_features_meta(tmp_path / "a" / "features")["backbone_model"] == "small_cnn"

    started = time.perf_counter()
    skipped = skip_pretraining(tmp_path / "skipped.pt", tmp_path / "live2", "extract.backbone='pixels'")
    assert skipped["skipped"] and time.perf_counter() - started < 5
    with pytest.raises(DataError, match="pretraining was skipped"):
        extract(prepared_dir, tmp_path / "b", encoder=tmp_path / "skipped.pt", backbone="encoder")


def test_encoder_trained_at_its_own_side_is_fed_that_side(prepared_dir, tmp_path):
    """``pretrain.image_size``: the encoder trains at 12 px on 8-px prepared images; the extract stage
    resizes to 12 as the training loop did, so its features are the encoder's on those very pixels."""
    from imageclust.models.encoder import load_encoder
    from imageclust.pretrain import loop
    from imageclust.pretrain.params import PretrainParams
    from imageclust.runtime import to_float_images

    params = PretrainParams(epochs=1, batch_size=32, warmup_epochs=0, image_size=12)
    loop.pretrain(prepared_dir, tmp_path / "encoder.pt", tmp_path / "ckpt", tmp_path / "live", CPU, ["train"], params)
    model, header = load_encoder(tmp_path / "encoder.pt")
    assert header["image_size"] == header["input_side"] == 12
    assert EXTRACTORS["encoder"].build(None, tmp_path / "encoder.pt").input_size == 12
    extract(prepared_dir, tmp_path / "a", encoder=tmp_path / "encoder.pt", backbone="encoder")
    features = read_features(tmp_path / "a" / "features")
    data = load_prepared(prepared_dir)
    assert data.images.shape[1] == 8 and list(features.ids) == list(data.ids)
    with torch.no_grad():
        expected = model(to_float_images(data.images, torch.device("cpu"), 12)).numpy()
    np.testing.assert_allclose(features.vectors, expected, rtol=1e-4, atol=1e-5)


def test_extract_stage_metrics_and_one_line_error(prepared_dir, tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["extract"].update(backbone="pixels", num_workers=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [
        sys.executable,
        "-m",
        "stages.extract",
        "--params",
        str(tmp_path / "params.yaml"),
        "--data",
        str(prepared_dir),
        "--encoder",
        "unused",
        "--out",
        str(tmp_path / "f"),
        "--work",
        str(tmp_path / "w"),
        "--metrics",
        str(tmp_path / "extract.json"),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
    metrics = json.loads((tmp_path / "extract.json").read_text())
    assert metrics["rows"] == 96 and metrics["images_per_second"] > 0
    cost = metrics["cost"]  # the stage's own wall time (not the interpreter's start), memory and throughput
    assert 0 < cost["seconds"] < 60 and cost["peak_memory_mib"] > 50
    assert cost["images"] == 96 and cost["images_per_s"] == pytest.approx(96 / cost["seconds"], rel=0.02)

    cmd[cmd.index("--data") + 1] = str(tmp_path / "absent")
    failed = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines()[-1].startswith("error: ") and "run the download stage" in failed.stderr


@pytest.mark.slow
def test_two_processes_give_the_features_of_one(prepared_dir, tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["device"] = "cpu"
    params["extract"].update(backbone="pixels", shard_rows=20, batch_size=8, num_workers=0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "stages.extract",
        "--params",
        str(tmp_path / "params.yaml"),
        "--data",
        str(prepared_dir),
        "--encoder",
        "unused",
        "--out",
        str(tmp_path / "features"),
        "--work",
        str(tmp_path / "work"),
        "--metrics",
        str(tmp_path / "extract.json"),
    ]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "extract.json").read_text())["world_size"] == 2

    extract(prepared_dir, tmp_path / "one", shard_rows=20, batch_size=8)
    two, one = read_features(tmp_path / "features"), read_features(tmp_path / "one" / "features")
    assert two.ids.tolist() == one.ids.tolist()
    np.testing.assert_array_equal(two.vectors, one.vectors)


@pytest.mark.slow
def test_killed_extract_process_resumes_to_the_same_features(tmp_path):
    """A real SIGKILL in the middle of extracting, then a rerun: the finished shards are kept."""
    from conftest import tiny_digits

    from imageclust.data.prepared import write_prepared

    write_prepared(tmp_path / "prepared", tiny_digits(n=240))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["device"] = "cpu"
    params["extract"].update(backbone="efficientnet_lite0", image_size=160, shard_rows=40, batch_size=8, num_workers=0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [
        sys.executable,
        "-m",
        "stages.extract",
        "--params",
        str(tmp_path / "params.yaml"),
        "--data",
        str(tmp_path / "prepared"),
        "--encoder",
        "unused",
        "--out",
        str(tmp_path / "features"),
        "--work",
        str(tmp_path / "work"),
        "--metrics",
        str(tmp_path / "extract.json"),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list((tmp_path / "work").glob("part-*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "features").exists()
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
    assert json.loads((tmp_path / "extract.json").read_text())["shards_resumed"] >= 1

    params["extract"]["backbone"] = "efficientnet_lite0"
    summary = extract_features(
        tmp_path / "prepared",
        None,
        tmp_path / "whole",
        tmp_path / "whole-work",
        CPU,
        ExtractParams(**params["extract"]),
    )
    assert summary["shards_resumed"] == 0
    resumed, whole = read_features(tmp_path / "features"), read_features(tmp_path / "whole")
    assert resumed.ids.tolist() == whole.ids.tolist()
    np.testing.assert_allclose(resumed.vectors, whole.vectors, rtol=1e-5, atol=1e-6)
