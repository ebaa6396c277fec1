"""Progress: a tqdm bar on a terminal, a few log lines elsewhere, on every long loop of the stages."""

import logging

import pytest
from tqdm import tqdm

from imageclust import progress as progress_module
from imageclust.progress import LogProgress, progress


@pytest.fixture(autouse=True)
def every_line(monkeypatch):
    """Loops here take milliseconds: log them as if each had run for long."""
    monkeypatch.setattr(progress_module, "QUIET_SECONDS", 0.0)


def test_a_log_gets_a_line_per_tenth_and_one_at_the_end(caplog, monkeypatch):
    monkeypatch.setattr(progress_module, "on_terminal", lambda: False)
    caplog.set_level(logging.INFO, logger="imageclust.progress")
    with progress(total=1000, desc="extract", unit="img") as bar:
        assert isinstance(bar, LogProgress)
        for _ in range(100):
            bar.update(10)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10  # 10%, 20%, ... 90%, then the end
    assert lines[0].startswith("extract: 10% (100/1,000 img, ") and "s left)" in lines[0]
    assert lines[-1].startswith("extract: 1,000 img in ")


def test_iterating_a_log_progress_ends_with_its_line(caplog, monkeypatch):
    monkeypatch.setattr(progress_module, "on_terminal", lambda: False)
    caplog.set_level(logging.INFO, logger="imageclust.progress")
    assert list(progress(range(3), desc="K", unit="K")) == [0, 1, 2]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("K: 33% (1/3 K") and lines[1].startswith("K: 67% (2/3 K")
    assert len(lines) == 3 and lines[2].startswith("K: 3 K in ")


def test_a_short_loop_says_nothing_in_a_log(caplog, monkeypatch):
    monkeypatch.setattr(progress_module, "on_terminal", lambda: False)
    monkeypatch.setattr(progress_module, "QUIET_SECONDS", 60.0)
    caplog.set_level(logging.INFO, logger="imageclust.progress")
    assert sum(progress(range(100), desc="epoch")) == 4950
    assert caplog.records == []


def test_a_terminal_gets_tqdm_and_other_ranks_nothing(monkeypatch):
    monkeypatch.setattr(progress_module, "on_terminal", lambda: True)
    bar = progress(total=5, desc="x")
    assert isinstance(bar, tqdm) and not bar.disable
    bar.close()
    assert progress(total=5, disable=True).disable


@pytest.mark.parametrize("ci, tty, expected", [("", True, True), ("true", True, False), ("", False, False)])
def test_on_terminal_only_without_ci(monkeypatch, ci, tty, expected):
    monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(progress_module.sys.stderr, "isatty", lambda: tty, raising=False)
    assert progress_module.on_terminal() is expected


def test_every_long_loop_of_a_small_run_reports_and_ends(stage_project, caplog, monkeypatch):
    """download, pretrain, extract, the scan over K, fine-tuning and the contact sheets each report."""
    monkeypatch.setattr(progress_module, "on_terminal", lambda: False)
    caplog.set_level(logging.INFO, logger="imageclust.progress")
    project = stage_project(
        {
            "data.max_per_split": 40,
            "pretrain.epochs": 1,
            "pretrain.batch_size": 16,
            "cluster.k": "auto",
            "cluster.auto_k.max_k": 4,
            "finetune.scan.epochs": 2,
            "finetune.scan.self_label_epochs": 0,
            "plot.embedding": "pca",
            "device": "cpu",
        }
    )
    project.run(
        "check_params", "download", "pretrain", "extract", "extract_spaces", "cluster", "finetune", "evaluate", "plot"
    )
    ended = [r.getMessage() for r in caplog.records if " in " in r.getMessage() and "/s)" in r.getMessage()]
    for loop in ("download digits: decode", "pretrain epoch 1/1", "extract encoder", "cluster: K by stability",
                 "finetune scan", "plot: contact sheets"):  # fmt: skip
        assert any(line.startswith(f"{loop}: ") for line in ended), (loop, ended)
