"""Shared fixtures: tiny real data (a slice of scikit-learn's digits) in the prepared form."""

from __future__ import annotations

import faulthandler
import importlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from imageclust.data import digits
from imageclust.data.params import DataParams
from imageclust.data.prepared import RawDataset, write_prepared
from imageclust.pretrain.params import PretrainParams

# The longest files (make test's --durations) are handed out first: `-n 2 --dist loadfile
# --no-loadscope-reorder` gives whole files to the two workers in collection order (xdist's default
# order, most tests first, left the two-test DVC file to run alone at the end).
LONGEST_FIRST = (
    "test_pipeline.py",
    "test_pipeline_experiments.py",
    "pretrain/test_loop.py",
    "test_predict.py",
    "test_faults.py",
    "test_unlabeled_flow.py",
    "features/test_stage.py",
    "data/test_folder.py",
    "clustering/test_stage.py",
    "finetune/test_registry.py",
)


# A test process that dies of a signal: pytest's own faulthandler writes into the capture of the test
# that crashed, which dies with the process. Each xdist worker writes its tracebacks to a file of a
# folder the controller makes instead, and the controller prints what they hold after the session.
FAULTS_DIR = "IMAGECLUST_TEST_FAULTS"


@pytest.hookimpl(trylast=True)  # after pytest's faulthandler plugin, which enables it on its own stream
def pytest_configure(config):
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        os.environ[FAULTS_DIR] = tempfile.mkdtemp(prefix="pytest-faults-")  # workers start after this
    elif os.environ.get(FAULTS_DIR):
        config._fault_log = open(Path(os.environ[FAULTS_DIR]) / f"{worker}.log", "w")  # noqa: SIM115
        faulthandler.enable(config._fault_log, all_threads=True)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown under -p no:xdist
def pytest_testnodedown(node, error):
    """A worker that went down: name how it ended. SIGKILL, and the SIGSEGV the kernel sends when it
    cannot deliver a signal (a signal stack on freed memory), leave faulthandler's log empty; the
    worker's core (``ulimit -c unlimited``) then shows where. One still alive is sent SIGABRT, so that
    faulthandler writes where each of its threads stood."""
    popen = getattr(getattr(node.gateway, "_io", None), "popen", None)
    if error is None or popen is None or not os.environ.get(FAULTS_DIR):
        return
    try:
        code = popen.wait(timeout=10)
        ending = f"exit status {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
    except subprocess.TimeoutExpired:
        ending = "still running 10 s after its channel closed; sent SIGABRT"
        popen.send_signal(signal.SIGABRT)
    line = f"worker {node.gateway.id} (pid {popen.pid}) went down ({error}): {ending}\n"
    sys.stderr.write(line)  # now, in case the controller hangs before its summary
    with open(Path(os.environ[FAULTS_DIR]) / "ends.txt", "a") as ends:
        ends.write(line)


def pytest_terminal_summary(terminalreporter, config):
    if os.environ.get("PYTEST_XDIST_WORKER") or not os.environ.get(FAULTS_DIR):
        return
    ends = Path(os.environ[FAULTS_DIR]) / "ends.txt"
    if ends.exists():
        terminalreporter.section("workers that went down", red=True)
        terminalreporter.write(ends.read_text())
    for log in sorted(Path(os.environ[FAULTS_DIR]).glob("*.log")):
        if log.stat().st_size:
            terminalreporter.section(f"fatal error in {log.stem}, from faulthandler", red=True)
            terminalreporter.write(log.read_text())


def pytest_unconfigure(config):
    if os.environ.get("PYTEST_XDIST_WORKER") is None and os.environ.get(FAULTS_DIR):
        shutil.rmtree(os.environ.pop(FAULTS_DIR), ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    tests = Path(__file__).parent

    def place(item) -> int:
        return rank.get(Path(item.fspath).relative_to(tests).as_posix(), len(rank))

    items.sort(key=place)  # stable: a file's tests keep their order


def tiny_digits(n: int = 96, seed: int = 0) -> RawDataset:
    full = digits.load(DataParams(test_fraction=0.25), seed)
    keep = np.sort(np.random.default_rng(seed).choice(len(full.ids), n, replace=False))
    images = np.stack([full.read(i) for i in keep])
    return RawDataset(
        name="digits",
        images=images,
        labels=full.labels[keep],
        splits=full.splits[keep],
        ids=full.ids[keep],
        classes=full.classes,
    )


@pytest.fixture(scope="session", autouse=True)
def engine_cache(tmp_path_factory):
    """The machine's cache of exported graphs and engine choices, for this test session only
    (stages run as subprocesses inherit it)."""
    folder = tmp_path_factory.mktemp("imageclust-cache")
    previous = os.environ.get("IMAGECLUST_CACHE")
    os.environ["IMAGECLUST_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("IMAGECLUST_CACHE", None)
    else:
        os.environ["IMAGECLUST_CACHE"] = previous


@pytest.fixture
def prepared_dir(tmp_path):
    out = tmp_path / "prepared"
    write_prepared(out, tiny_digits())
    return out


def three_shapes(n=60, size=8, seed=0):
    """Gray images of three kinds: bright top half, bright left half, bright centre, with noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    images = rng.integers(0, 40, size=(n, size, size, 1))
    half = size // 2
    images[labels == 0, :half] += 200
    images[labels == 1, :, :half] += 200
    images[labels == 2, half // 2 : half + half // 2, half // 2 : half + half // 2] += 200
    return np.clip(images, 0, 255).astype(np.uint8), labels


@pytest.fixture
def image_run(tmp_path):
    """A prepared folder of 60 tiny images and a randomly initialised small CNN as the encoder; returns
    a function that builds a FinetuneRun for given params."""
    from imageclust.finetune.base import FinetuneRun
    from imageclust.finetune.images import Images, embed
    from imageclust.models.backbones import build_backbone
    from imageclust.models.encoder import load_encoder, save_encoder

    images, labels = three_shapes()
    n = len(images)
    ids = np.array([f"img{i}" for i in range(n)], dtype=object)
    splits = np.where(np.arange(n) % 5 == 0, "test", "train").astype(object)
    write_prepared(tmp_path / "prepared", RawDataset("shapes", images, labels, splits, ids, ["a", "b", "c"]))
    torch.manual_seed(0)
    pretrain = PretrainParams(widths=[4, 8])
    save_encoder(tmp_path / "encoder.pt", build_backbone("small_cnn", 1, 8, widths=[4, 8]), pretrain, 1, 8)

    def make(params, checkpoint_dir=None, run_id="test", seed=0):
        base = FinetuneRun(
            vectors=np.zeros((n, 1), np.float32),
            labels=labels,
            train=splits == "train",
            initial_clusters=labels.copy(),
            initial_confidence=np.ones(n, np.float32),
            num_clusters=3,
            params=params,
            seed=seed,
            device=torch.device("cpu"),
            prepared_dir=tmp_path / "prepared",
            encoder_path=tmp_path / "encoder.pt",
            row_images=np.arange(n),
            checkpoint_dir=checkpoint_dir,
            run_id=run_id,
        )
        base.vectors = embed(load_encoder(base.encoder_path)[0], Images(base), np.arange(n), 32)
        return base

    return make


REPO = Path(__file__).resolve().parents[1]


class StageProject:
    """A folder with a params.yaml (the repository's, with dotted overrides) in which the commands of
    dvc.yaml run in this process, as ``dvc repro`` would run them, without DVC's overhead."""

    def __init__(self, root: Path, overrides: dict):
        self.root = root
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        for key, value in overrides.items():
            *parents, leaf = key.split(".")
            node = params
            for part in parents:
                node = node[part]
            assert leaf in node, key
            node[leaf] = value
        self.params = params
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
        self.commands = dvc_yaml["stages"]
        self.paths = next(v["paths"] for v in dvc_yaml["vars"] if isinstance(v, dict) and "paths" in v)

    def argv(self, stage: str) -> list[str]:
        """The stage's command line, its ``${paths.*}`` filled in as DVC fills them."""
        return shlex.split(re.sub(r"\$\{paths\.(\w+)\}", lambda m: self.paths[m.group(1)], self.commands[stage]["cmd"]))

    def run(self, *stages: str) -> None:
        """Run the stages in order; a user error ends in SystemExit(2), as from the command line."""
        from imageclust.cli import run_stage

        for stage in stages:
            argv = self.argv(stage)
            assert argv[:3] == ["python", "-m", f"stages.{stage}"]
            module = importlib.import_module(f"stages.{stage}")
            run_stage(module.main, module.build_parser(), [*argv[3:], "--params", str(self.root / "params.yaml")])


@pytest.fixture
def stage_project(tmp_path, monkeypatch):
    """``make(overrides) -> StageProject`` in ``tmp_path`` (the working folder while the test runs)."""
    monkeypatch.chdir(tmp_path)
    return lambda overrides: StageProject(tmp_path, overrides)
