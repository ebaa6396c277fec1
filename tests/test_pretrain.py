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

from imageclust.config import DataParams, GlobalParams, PretrainParams
from imageclust.data import load_prepared
from imageclust.io import load_torch
from imageclust.pretrain import loop

REPO = Path(__file__).resolve().parents[1]
TINY = dict(epochs=2, batch_size=32, warmup_epochs=1, checkpoint_every=1)


def run(prepared_dir, out: Path, **overrides):
    params = PretrainParams(**{**TINY, **overrides})
    summary = loop.pretrain(prepared_dir, out / "encoder.pt", out / "ckpt", out / "live",
                            GlobalParams(seed=3, device="cpu"), DataParams(), params)
    return summary, load_torch(out / "encoder.pt")


def test_warmup_cosine_schedule():
    assert loop.warmup_cosine(0, 4, 20) == pytest.approx(0.25)
    assert loop.warmup_cosine(3, 4, 20) == pytest.approx(1.0)
    assert loop.warmup_cosine(12, 4, 20) == pytest.approx(0.5)  # half-way through the decay
    assert loop.warmup_cosine(20, 4, 20) == pytest.approx(0.0)


def test_epoch_batches_drop_the_partial_batch_and_depend_on_the_epoch():
    batches = loop.epoch_batches(10, 4, seed=0, epoch=0)
    assert [len(b) for b in batches] == [4, 4]
    assert len(set(map(int, torch.cat([torch.as_tensor(b) for b in batches])))) == 8
    assert loop.epoch_batches(3, 4, 0, 0)[0].size == 3  # smaller than one batch: keep everything
    assert not all((a == b).all() for a, b in zip(batches, loop.epoch_batches(10, 4, seed=0, epoch=1)))


def test_one_epoch_writes_encoder_curves_and_checkpoint(prepared_dir, tmp_path):
    summary, encoder = run(prepared_dir, tmp_path, epochs=1)
    train_samples = (load_prepared(prepared_dir).splits == "train").sum()
    assert summary["epochs"] == 1 and summary["train_samples"] == train_samples < 96
    assert torch.isfinite(torch.tensor(summary["final_loss"]))
    assert encoder["backbone"] == "small_cnn" and encoder["in_channels"] == 1
    assert (tmp_path / "ckpt" / loop.CHECKPOINT_FILE).exists()
    assert (tmp_path / "live" / "plots" / "metrics" / "loss.tsv").read_text().count("\n") == 2


def test_same_seed_same_encoder(prepared_dir, tmp_path):
    _, first = run(prepared_dir, tmp_path / "a", epochs=1)
    _, second = run(prepared_dir, tmp_path / "b", epochs=1)
    for key, value in first["state_dict"].items():
        assert torch.equal(value, second["state_dict"][key]), key


def test_killed_run_resumes_to_the_same_encoder(prepared_dir, tmp_path, monkeypatch):
    _, uninterrupted = run(prepared_dir, tmp_path / "whole", epochs=3)

    real_batches = loop.epoch_batches

    def killed_in_third_epoch(n, batch_size, seed, epoch):
        if epoch == 2:
            raise KeyboardInterrupt("killed")
        return real_batches(n, batch_size, seed, epoch)

    monkeypatch.setattr(loop, "epoch_batches", killed_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        run(prepared_dir, tmp_path / "killed", epochs=3)
    assert not (tmp_path / "killed" / "encoder.pt").exists()  # nothing half-done for extract to read
    monkeypatch.setattr(loop, "epoch_batches", real_batches)

    summary, resumed = run(prepared_dir, tmp_path / "killed", epochs=3)
    assert summary["resumed_from_epoch"] == 2
    for key, value in uninterrupted["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    # the curve holds all three epochs, the two before the kill re-logged from the checkpoint
    assert (tmp_path / "killed" / "live" / "plots" / "metrics" / "loss.tsv").read_text().count("\n") == 4


def test_checkpoint_of_another_configuration_is_not_resumed(prepared_dir, tmp_path):
    run(prepared_dir, tmp_path, epochs=1)
    summary, _ = run(prepared_dir, tmp_path, epochs=1, temperature=0.2)
    assert summary["resumed_from_epoch"] == 0


@pytest.mark.slow
def test_distributed_pretraining_on_two_cpu_processes(prepared_dir, tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["device"] = "cpu"
    params["pretrain"].update(TINY, epochs=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "stages.pretrain", "--params", str(tmp_path / "params.yaml"), "--data", str(prepared_dir),
           "--encoder", str(tmp_path / "encoder.pt"), "--checkpoints", str(tmp_path / "ckpt"),
           "--live", str(tmp_path / "live"), "--metrics", str(tmp_path / "pretrain.json")]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "pretrain.json").read_text())
    assert summary["world_size"] == 2 and summary["epochs"] == 1
    assert load_torch(tmp_path / "encoder.pt")["backbone"] == "small_cnn"
