"""The shared pretraining loop: one epoch runs, a killed run resumes exactly, DDP runs on gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from imageclust.config import GlobalParams
from imageclust.data.prepared import load_prepared
from imageclust.io import load_torch, save_torch
from imageclust.pretrain import loop
from imageclust.pretrain.params import PretrainParams

REPO = Path(__file__).resolve().parents[2]
TINY = dict(epochs=2, batch_size=32, warmup_epochs=1, checkpoint_every=1)


def run(prepared_dir, out: Path, **overrides):
    params = PretrainParams(**{**TINY, **overrides})
    summary = loop.pretrain(
        prepared_dir,
        out / "encoder.pt",
        out / "ckpt",
        out / "live",
        GlobalParams(seed=3, device="cpu"),
        ["train"],
        params,
    )
    return summary, load_torch(out / "encoder.pt")


def test_warmup_cosine_schedule():
    assert loop.warmup_cosine(0, 4, 20) == pytest.approx(0.25)
    assert loop.warmup_cosine(3, 4, 20) == pytest.approx(1.0)
    assert loop.warmup_cosine(12, 4, 20, "constant") == 1.0 and loop.warmup_cosine(0, 4, 20, "constant") == 0.25
    assert loop.warmup_cosine(12, 4, 20) == pytest.approx(0.5)  # half-way through the decay
    assert loop.warmup_cosine(20, 4, 20) == pytest.approx(0.0)


def test_epoch_batches_drop_the_partial_batch_and_depend_on_the_epoch():
    batches = loop.epoch_batches(10, 4, seed=0, epoch=0)
    assert [len(b) for b in batches] == [4, 4]
    assert len(set(map(int, torch.cat([torch.as_tensor(b) for b in batches])))) == 8
    assert loop.epoch_batches(3, 4, 0, 0)[0].size == 3  # smaller than one batch: keep everything
    assert not all((a == b).all() for a, b in zip(batches, loop.epoch_batches(10, 4, seed=0, epoch=1)))


def test_one_epoch_writes_encoder_and_curves_and_empties_the_checkpoints(prepared_dir, tmp_path):
    summary, encoder = run(prepared_dir, tmp_path, epochs=1)
    train_samples = (load_prepared(prepared_dir).splits == "train").sum()
    assert summary["epochs"] == 1 and summary["train_samples"] == train_samples < 96
    assert torch.isfinite(torch.tensor(summary["final_loss"]))
    assert encoder["backbone"] == "small_cnn" and encoder["in_channels"] == 1
    assert list((tmp_path / "ckpt").iterdir()) == []  # done: no resume state for DVC to cache
    assert (tmp_path / "live" / "plots" / "metrics" / "loss.tsv").read_text().count("\n") == 2


def test_same_seed_same_encoder(prepared_dir, tmp_path):
    _, first = run(prepared_dir, tmp_path / "a", epochs=1)
    _, second = run(prepared_dir, tmp_path / "b", epochs=1)
    for key, value in first["state_dict"].items():
        assert torch.equal(value, second["state_dict"][key]), key


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_killed_run_resumes_to_the_same_encoder(prepared_dir, tmp_path, monkeypatch, method):
    more = {"method": method, "moco": {"queue_size": 48}}  # the queue and key encoder must survive the kill
    _, uninterrupted = run(prepared_dir, tmp_path / "whole", epochs=3, **more)

    real_batches = loop.epoch_batches

    def killed_in_third_epoch(n, batch_size, seed, epoch):
        if epoch == 2:
            raise KeyboardInterrupt("killed")
        return real_batches(n, batch_size, seed, epoch)

    monkeypatch.setattr(loop, "epoch_batches", killed_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        run(prepared_dir, tmp_path / "killed", epochs=3, **more)
    assert not (tmp_path / "killed" / "encoder.pt").exists()  # nothing half-done for extract to read
    monkeypatch.setattr(loop, "epoch_batches", real_batches)

    summary, resumed = run(prepared_dir, tmp_path / "killed", epochs=3, **more)
    assert summary["resumed_from_epoch"] == 2
    for key, value in uninterrupted["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    # the curve holds all three epochs, the two before the kill re-logged from the checkpoint
    assert (tmp_path / "killed" / "live" / "plots" / "metrics" / "loss.tsv").read_text().count("\n") == 4


def _stage_command(prepared_dir, out: Path, **pretrain) -> list[str]:
    """The pretrain stage as DVC runs it, with ``pretrain`` overrides in its own params file."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["device"] = "cpu"
    params["pretrain"].update(TINY, **pretrain)
    out.mkdir(parents=True, exist_ok=True)
    (out / "params.yaml").write_text(yaml.safe_dump(params))
    return [
        sys.executable,
        "-m",
        "stages.pretrain",
        "--params",
        str(out / "params.yaml"),
        "--data",
        str(prepared_dir),
        "--encoder",
        str(out / "encoder.pt"),
        "--checkpoints",
        str(out / "ckpt"),
        "--live",
        str(out / "live"),
        "--metrics",
        str(out / "pretrain.json"),
    ]


def test_process_killed_with_sigkill_resumes_to_the_same_encoder(prepared_dir, tmp_path):
    """A real kill -9 of the stage's process once its first checkpoint is on disk (mid-epoch, or even
    mid-write of the next checkpoint); the rerun resumes from the last checkpoint and ends with the
    very encoder an uninterrupted run trains. MoCo, so that the queue and key encoder must survive."""
    import time

    more = {"method": "moco", "moco": {"queue_size": 48}, "epochs": 40}
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    whole = subprocess.run(
        _stage_command(prepared_dir, tmp_path / "whole", **more),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert whole.returncode == 0, whole.stderr[-3000:]

    killed_dir = tmp_path / "killed"
    command = _stage_command(prepared_dir, killed_dir, **more)
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed_dir / "ckpt" / loop.CHECKPOINT_FILE
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.kill()
    process.wait()
    assert process.returncode == -9, "the run ended before it could be killed"
    assert not (killed_dir / "encoder.pt").exists()
    assert not [p for p in (killed_dir / "ckpt").iterdir() if p.name != loop.CHECKPOINT_FILE]  # no partial files
    killed_at = load_torch(checkpoint)["epoch"]
    assert 1 <= killed_at < 40

    resumed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((killed_dir / "pretrain.json").read_text())["resumed_from_epoch"] >= killed_at
    expected, got = load_torch(tmp_path / "whole" / "encoder.pt"), load_torch(killed_dir / "encoder.pt")
    for key, value in expected["state_dict"].items():
        assert torch.equal(value, got["state_dict"][key]), key


def checkpoints_written(monkeypatch) -> list[dict]:
    """What the loop writes as its checkpoints (the last one is removed once training is done)."""
    written = []
    real = loop.save_torch

    def record(path, obj):
        if Path(path).name == loop.CHECKPOINT_FILE:
            written.append(obj)
        real(path, obj)

    monkeypatch.setattr(loop, "save_torch", record)
    return written


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_precision_on_the_cpu(prepared_dir, tmp_path, precision, monkeypatch):
    written = checkpoints_written(monkeypatch)
    summary, _ = run(prepared_dir, tmp_path, epochs=1, precision=precision)
    assert torch.isfinite(torch.tensor(summary["final_loss"]))
    assert "scaler" in written[-1]


def test_float16_needs_cuda(prepared_dir, tmp_path):
    from imageclust.errors import ParamsError

    with pytest.raises(ParamsError, match="pretrain.precision='fp16'"):
        run(prepared_dir, tmp_path, epochs=1, precision="fp16")


def test_stop_early_after_patience_epochs_without_improvement():
    from imageclust.pretrain.params import EarlyStoppingParams

    p = EarlyStoppingParams(patience=2, min_delta=0.1)
    assert not loop.stop_early([3.0, 2.0], p)  # not enough epochs to judge
    assert not loop.stop_early([3.0, 2.0, 1.5], p)  # improving
    assert not loop.stop_early([3.0, 2.0, 2.5, 1.85], p)  # 1.85 beats 2.0 by more than 0.1
    assert loop.stop_early([3.0, 2.0, 2.5, 1.95], p)  # two epochs, neither 0.1 below 2.0
    assert not loop.stop_early([3.0, 2.0, 2.5, 1.95], EarlyStoppingParams())  # no patience: never


def test_early_stopping_ends_training_and_a_resumed_run_stays_stopped(prepared_dir, tmp_path, monkeypatch):
    stop = {"early_stopping": {"patience": 1, "min_delta": 100.0}}  # no epoch can improve by 100
    written = checkpoints_written(monkeypatch)
    summary, _ = run(prepared_dir, tmp_path, epochs=5, **stop)
    assert summary["stopped_early"] and summary["epochs"] == 2
    # killed after the checkpoint of the stopping epoch, before the encoder: the rerun stops at once
    save_torch(tmp_path / "ckpt" / loop.CHECKPOINT_FILE, written[-1])
    again, _ = run(prepared_dir, tmp_path, epochs=5, **stop)
    assert again["resumed_from_epoch"] == 2 and again["epochs"] == 2 and again["images_trained"] == 0


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "lars"])
def test_every_optimizer_and_accumulated_gradients_train(prepared_dir, tmp_path, optimizer, monkeypatch):
    written = checkpoints_written(monkeypatch)
    summary, encoder = run(prepared_dir, tmp_path, epochs=1, optimizer=optimizer, accumulate_steps=2)
    assert torch.isfinite(torch.tensor(summary["final_loss"]))
    state = written[-1]
    batches = len(loop.epoch_batches(summary["train_samples"], TINY["batch_size"], 0, 0))
    assert state["scheduler"]["last_epoch"] == -(-batches // 2)  # one update per two batches


def test_lars_scales_each_step_by_the_trust_ratio():
    from imageclust.pretrain.optim import LARS

    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # |w| = 5
    w.grad = torch.tensor([0.0, 10.0])  # |g| = 10
    LARS([{"params": [w], "weight_decay": 0.0}], lr=1.0, momentum=0.9, eta=0.1).step()
    # trust = 0.1 * 5 / 10 = 0.05: w - 1.0 * 0.05 * g
    torch.testing.assert_close(w.detach(), torch.tensor([3.0, 3.5]))
    b = torch.nn.Parameter(torch.tensor([1.0]))
    b.grad = torch.tensor([2.0])
    LARS([{"params": [b], "weight_decay": 0.0, "adapt": False}], lr=0.5).step()  # plain SGD step
    torch.testing.assert_close(b.detach(), torch.tensor([0.0]))


def test_checkpoint_of_another_configuration_is_not_resumed(prepared_dir, tmp_path):
    run(prepared_dir, tmp_path, epochs=1)
    summary, _ = run(prepared_dir, tmp_path, epochs=1, simclr={"temperature": 0.2})
    assert summary["resumed_from_epoch"] == 0


def _torchrun(prepared_dir, out: Path, processes: int, **pretrain) -> list[float]:
    """The pretrain stage under torchrun; its loss curve."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    stage = _stage_command(prepared_dir, out, **pretrain)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
        *stage[1:],
    ]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "pretrain.json").read_text())
    assert summary["world_size"] == processes and load_torch(out / "encoder.pt")["backbone"] == "small_cnn"
    rows = (out / "live" / "plots" / "metrics" / "loss.tsv").read_text().splitlines()[1:]
    return [float(row.split("\t")[-1]) for row in rows]


@pytest.mark.slow
@pytest.mark.parametrize("method, tolerance", [("simclr", 0.05), ("moco", 0.1)])
def test_two_cpu_processes_follow_the_loss_curve_of_one(prepared_dir, tmp_path, method, tolerance):
    """The same global batch in one process and split over two gloo processes. SimCLR's negatives and
    MoCo's queue come from both: without that, each SimCLR view would see 30 negatives instead of
    62 and the loss would drop by about log(63/31) = 0.7. What still differs is batch norm (per
    process on the CPU, where PyTorch has no synchronised batch norm) and the augmentations, drawn
    per process: over 2 epochs of this tiny set the curves agree within 5% (SimCLR) and 10% (MoCo,
    whose loss is noisier early on). The gathered loss itself is checked exactly in test_losses."""
    more = {"method": method, "epochs": 2, "moco": {"queue_size": 64}}
    one = _torchrun(prepared_dir, tmp_path / "one", 1, **more)
    two = _torchrun(prepared_dir, tmp_path / "two", 2, **more)
    assert len(one) == len(two) == 2
    assert two == pytest.approx(one, rel=tolerance)


def test_no_pretraining_with_the_encoder_writes_its_random_initialisation(prepared_dir, tmp_path):
    """``pretrain.method: none`` with ``extract.backbone: encoder``: the seeded random backbone in a
    second, and every declared output exists (DVC fails a stage whose output is missing)."""
    from imageclust.models.encoder import load_encoder

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        _stage_command(prepared_dir, tmp_path / "a", method="none"),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("encoder.pt", "ckpt", "live", "pretrain.json"):
        assert (tmp_path / "a" / name).exists(), name
    assert json.loads((tmp_path / "a" / "pretrain.json").read_text())["random_init"] is True
    from imageclust.models.backbones import build_backbone
    from imageclust.runtime import seed_everything

    saved, header = load_encoder(tmp_path / "a" / "encoder.pt")
    seed_everything(0)  # params.yaml's seed: the same random network, built here
    expected = build_backbone(header["backbone"], header["in_channels"], header["image_size"], **header["options"])
    for key, value in expected.state_dict().items():
        torch.testing.assert_close(saved.state_dict()[key], value)


@pytest.mark.parametrize("image_size, side", [(None, (8, 12)), (10, (10, 10))])
def test_batches_come_as_prepared_unless_pretrain_image_size(tmp_path, monkeypatch, image_size, side):
    """Images prepared 8 x 12 train as they are (the extract stage feeds them so), or at
    ``pretrain.image_size``'s square."""
    import numpy as np

    from imageclust.data.prepared import RawDataset, write_prepared

    rng = np.random.default_rng(0)
    ids = np.array([f"s{i}" for i in range(40)], dtype=object)
    images = rng.integers(0, 255, size=(40, 8, 12, 1), dtype=np.uint8)
    write_prepared(
        tmp_path / "prepared", RawDataset("wide", images, np.arange(40) % 2, np.full(40, "train"), ids, ["a", "b"])
    )
    shapes = []
    real = loop.to_float_images

    def recording(*args):
        x = real(*args)
        shapes.append(tuple(x.shape[-2:]))
        return x

    monkeypatch.setattr(loop, "to_float_images", recording)
    _, encoder = run(tmp_path / "prepared", tmp_path / "out", epochs=1, batch_size=16, image_size=image_size)
    assert shapes and set(shapes) == {side}
    assert encoder["input_side"] == image_size
