"""Fault injection: a loss that stops being a number, a disk that fills up while a stage writes,
determinism, degenerate data and a download killed while unpacking. Stages run as ``dvc repro``
would run them (in-process, through ``run_stage``) on 120 digits. ``pytest -m faults`` runs them
alone (with the fuzzing of every params key, ``tests/test_params_fuzz.py``).

The cases and what happens are tabled in docs/faults.md."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
import torch.nn.functional as F

pytestmark = pytest.mark.faults

TINY = {
    "data.max_per_split": 60,
    "pretrain.epochs": 1,
    "pretrain.batch_size": 32,
    "pretrain.warmup_epochs": 0,
    "extract.num_workers": 0,
    "cluster.k": 5,
    "finetune.batch_size": 32,
    "finetune.method": "scan",
    "device": "cpu",
    "finetune.scan.epochs": 1,
    "finetune.scan.self_label_epochs": 1,
    "finetune.scan.num_heads": 1,
    "finetune.temi.epochs": 1,
    "finetune.deepcluster.epochs": 1,
    "finetune.spectral.epochs": 1,
    "finetune.spectral.num_neighbors": 5,
}


def nan_of(fn):
    """``fn`` whose results are NaN (still attached to the graph, so backward runs as it would)."""

    def poisoned(*args, **kwargs):
        out = fn(*args, **kwargs)
        return tuple(o * float("nan") for o in out) if isinstance(out, tuple) else out * float("nan")

    return poisoned


def failed(capsys, call) -> str:
    with pytest.raises(SystemExit) as exit_:
        call()
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("error: ")
    return lines[-1]


@pytest.fixture
def through_extract(stage_project):
    project = stage_project({**TINY, "finetune.method": "none"})  # its finetune outputs: what a failed rerun keeps
    project.run("check_params", "download", "pretrain", "extract", "extract_spaces", "cluster")
    return project


def test_nan_loss_in_pretraining_stops_with_epoch_and_step(stage_project, monkeypatch, capsys, tmp_path):
    import imageclust.pretrain.simclr as simclr

    project = stage_project(TINY)
    project.run("check_params", "download")
    monkeypatch.setattr(simclr, "nt_xent", nan_of(simclr.nt_xent))
    message = failed(capsys, lambda: project.run("pretrain"))
    assert "pretrain simclr: the loss is nan at epoch 1, step 1" in message and "pretrain.lr" in message
    assert not (tmp_path / "artifacts/pretrain/encoder.pt").exists()
    assert not (tmp_path / "metrics/pretrain.json").exists()


def _poison_deepcluster(monkeypatch):
    import types

    import imageclust.finetune.deepcluster as module

    functional = types.SimpleNamespace(**{name: getattr(F, name) for name in dir(F) if not name.startswith("__")})
    functional.cross_entropy = nan_of(F.cross_entropy)
    monkeypatch.setattr(module, "F", functional)


POISON = {
    "scan": lambda mp: mp.setattr(
        "imageclust.finetune.scan.scan_loss",
        nan_of(__import__("imageclust.losses.clustering", fromlist=["x"]).scan_loss),
    ),
    "temi": lambda mp: mp.setattr(
        "imageclust.finetune.temi.temi_loss",
        nan_of(__import__("imageclust.losses.clustering", fromlist=["x"]).temi_loss),
    ),
    "spectral": lambda mp: mp.setattr(
        "imageclust.finetune.spectral.prototype_loss",
        nan_of(__import__("imageclust.losses.prototypes", fromlist=["x"]).prototype_loss),
    ),
    "deepcluster": _poison_deepcluster,
}


@pytest.mark.parametrize("method", sorted(POISON))
def test_nan_loss_in_finetuning_stops_and_keeps_the_previous_outputs(
    method, through_extract, stage_project, monkeypatch, capsys, tmp_path
):
    through_extract.run("finetune")
    before = {p.name: p.read_bytes() for p in (tmp_path / "artifacts/finetune").iterdir()}
    metrics = (tmp_path / "metrics/finetune.json").read_text()
    project = stage_project({**TINY, "finetune.method": method})
    POISON[method](monkeypatch)
    message = failed(capsys, lambda: project.run("finetune"))
    assert f"finetune {method}: the loss is nan at epoch 1, step 1" in message
    assert f"finetune.{method}.lr" in message
    assert {p.name: p.read_bytes() for p in (tmp_path / "artifacts/finetune").iterdir()} == before
    assert (tmp_path / "metrics/finetune.json").read_text() == metrics
    assert not list((tmp_path / "artifacts").glob(".*.tmp"))  # no temporary folder left behind


def test_disk_full_while_writing_keeps_the_previous_outputs(through_extract, monkeypatch, capsys, tmp_path):
    import pyarrow.parquet as pq

    through_extract.run("finetune")
    before = {p.name: p.read_bytes() for p in (tmp_path / "artifacts/finetune").iterdir()}
    clustered = (tmp_path / "artifacts/cluster/assignments.parquet").read_bytes()

    def full(table, where, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(where))

    monkeypatch.setattr(pq, "write_table", full)
    for stage in ("cluster", "finetune"):
        message = failed(capsys, lambda stage=stage: through_extract.run(stage))
        assert message.startswith("error: no space left on the device writing ") and "unchanged" in message
    assert {p.name: p.read_bytes() for p in (tmp_path / "artifacts/finetune").iterdir()} == before
    assert (tmp_path / "artifacts/cluster/assignments.parquet").read_bytes() == clustered
    assert not [p for p in (tmp_path / "artifacts").rglob("*") if p.name.startswith(".") and "tmp" in p.name]
    assert json.loads((tmp_path / "metrics/cluster.json").read_text())["k"] == 5


# ---------------------------------------------------------------- determinism

STAGES = ("check_params", "download", "pretrain", "extract", "extract_spaces", "cluster", "finetune", "evaluate")


def _assignments(folder) -> tuple:
    import pyarrow.parquet as pq

    table = pq.read_table(folder / "assignments.parquet")
    return tuple(table.column("cluster").to_pylist()), tuple(table.column("confidence").to_pylist())


def test_same_seed_same_assignments_other_seed_other_run(tmp_path, monkeypatch):
    from conftest import StageProject

    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        root = tmp_path / name
        root.mkdir()
        monkeypatch.chdir(root)
        StageProject(root, {**TINY, "seed": seed}).run(*STAGES)
        runs[name] = {stage: _assignments(root / "artifacts" / stage) for stage in ("cluster", "finetune")}
        runs[name]["encoder"] = (root / "artifacts/pretrain/encoder.pt").read_bytes()
    assert runs["a"] == runs["b"]  # bit for bit: weights, clusters and confidences
    assert runs["c"]["encoder"] != runs["a"]["encoder"] and runs["c"]["finetune"] != runs["a"]["finetune"]


# ---------------------------------------------------------------- degenerate data


def _digits(n: int, one_class: bool = False):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    if one_class:
        x, y = x[y == 3], y[y == 3]
    return (x[:n].reshape(-1, 8, 8) * 16).clip(0, 255).astype(np.uint8), y[:n]


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


DEGENERATE = {
    # case: (arrays in the .npz, params, what must happen: "runs" or the start of the one-line error)
    "one class": (lambda: dict(zip(("images", "labels"), _digits(60, one_class=True))), {}, "runs"),
    "fewer samples than clusters": (
        lambda: dict(zip(("images", "labels"), _digits(8))),
        {"data.test_fraction": 0.0},
        "error: params: cluster.k=10 is invalid: larger than the 8 training samples",
    ),
    "identical images": (
        lambda: {"images": np.repeat(_digits(1)[0], 40, axis=0), "labels": np.zeros(40, int)},
        {},
        "runs",
    ),
    "all-black images": (lambda: {"images": np.zeros((40, 8, 8), np.uint8)}, {}, "runs"),
    "a single image": (
        lambda: {"images": _digits(1)[0]},
        {"cluster.k": 2, "data.test_fraction": 0.0},
        "error: data/prepared: the training splits hold 1 samples; need at least 2",
    ),
    "K equal to N": (
        lambda: dict(zip(("images", "labels"), _digits(12))),
        {"cluster.k": 12, "data.test_fraction": 0.0, "finetune.scan.num_neighbors": 5},
        "runs",
    ),
    "a split without labels beside one with labels": (
        lambda: {"x_train": _digits(60)[0], "y_train": _digits(60)[1], "x_test": _digits(30)[0]},
        {},
        "runs",
    ),
}


@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_degenerate_data_runs_or_stops_with_one_line(case, stage_project, capsys, tmp_path):
    arrays, params, expected = DEGENERATE[case]
    root = _npz(tmp_path / "data.npz", **arrays())
    project = stage_project(
        {**TINY, "cluster.k": 10, "data.name": "arrays", "data.root": root, "data.max_per_split": None, **params}
    )
    if expected == "runs":
        project.run(*STAGES)
        scores = json.loads((tmp_path / "metrics/evaluate.json").read_text())["finetune"]["all"]
        given = arrays()
        assert scores["n"] == (len(given["images"]) if "images" in given else 90)
        assert scores["clusters_nonempty"] >= 1
        if "acc" in scores:
            assert 0 <= scores["acc"] <= 1
    else:
        message = failed(capsys, lambda: project.run(*STAGES))
        assert message.startswith(expected), message


# ---------------------------------------------------------------- kill -9


def test_download_killed_while_unpacking_leaves_nothing_and_reruns_to_the_same_data(tmp_path):
    """SIGKILL in the middle of unpacking an archive: the next run removes the half-unpacked folder
    and prepares exactly what an uninterrupted run prepares."""
    import os
    import signal
    import subprocess
    import sys
    import tarfile
    import time

    import yaml
    from conftest import REPO
    from PIL import Image

    rng = np.random.default_rng(0)
    archive = tmp_path / "photos.tar"  # uncompressed and large: unpacking takes long enough to be caught
    with tarfile.open(archive, "w") as tar:
        for i in range(400):
            path = tmp_path / "src" / ("a" if i % 2 else "b") / f"{i}.bmp"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(path)
            tar.add(path, path.relative_to(tmp_path / "src").as_posix())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(name="image_folder", root=str(archive), download_dir=str(tmp_path / "raw"), image_size=16)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    def download(out: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "stages.download",
            "--params",
            str(tmp_path / "params.yaml"),
            "--out",
            str(tmp_path / out),
            "--metrics",
            str(tmp_path / f"{out}.json"),
        ]

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        download("killed"), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list((tmp_path / "raw").glob(".*.unpacked/*")):
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert list((tmp_path / "raw").glob(".*.unpacked")), "killed before it began unpacking"
    assert not (tmp_path / "killed").exists()  # nothing half-written where the stage's output goes
    subprocess.run(download("killed"), cwd=tmp_path, env=env, check=True, capture_output=True)
    subprocess.run(download("whole"), cwd=tmp_path, env=env, check=True, capture_output=True)
    assert list((tmp_path / "raw").iterdir()) == []
    for name in ("images.npy", "samples.parquet"):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


def test_finetune_killed_mid_run_resumes_to_the_assignments_of_an_uninterrupted_run(tmp_path, monkeypatch):
    """SIGKILL of the finetune stage's process after a checkpoint; the rerun resumes from it and ends
    where a run that was never stopped ends."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO, StageProject

    params = {
        **TINY,
        "finetune.method": "scan",
        "finetune.scan.epochs": 30,
        "finetune.scan.self_label_epochs": 0,
        "finetune.checkpoint_every": 1,
    }
    projects = {}
    for name in ("killed", "whole"):
        root = tmp_path / name
        root.mkdir()
        monkeypatch.chdir(root)
        projects[name] = StageProject(root, params)
        projects[name].run("check_params", "download", "pretrain", "extract", "extract_spaces", "cluster")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = ["python", "-m", "stages.finetune", *projects["killed"].argv("finetune")[3:]]
    command[0] = sys.executable
    checkpoint = tmp_path / "killed/artifacts/finetune-checkpoints/last.pt"
    process = subprocess.Popen(
        command, cwd=tmp_path / "killed", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and not checkpoint.exists():
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert checkpoint.exists() and not (tmp_path / "killed/artifacts/finetune").exists()
    rerun = subprocess.run(command, cwd=tmp_path / "killed", env=env, capture_output=True, text=True)
    assert rerun.returncode == 0 and "resuming scan" in rerun.stderr
    subprocess.run(command, cwd=tmp_path / "whole", env=env, check=True, capture_output=True)
    assert _assignments(tmp_path / "killed/artifacts/finetune") == _assignments(tmp_path / "whole/artifacts/finetune")
