"""The comparison command on ``dvc exp show --json`` output shaped as DVC 3 writes it."""

import json

import pandas as pd
import pytest
from PIL import Image

from imageclust.compare import main


def _data(rev, k, method, acc, seconds):
    scores = {"acc": acc, "nmi": acc - 0.1, "ari": acc - 0.2, "n": 100}
    return {
        "rev": rev,
        "timestamp": None,
        "params": {"params.yaml": {"data": {"seed": 0, "cluster": {"k": k, "method": method}}}},
        "metrics": {
            "metrics/evaluate.json": {
                "data": {"cluster": {"all": scores}, "finetune": {"all": {**scores, "acc": acc + 0.01}}}
            },
            "metrics/cluster.json": {"data": {"k": k, "cost": {"seconds": seconds, "peak_memory_mib": 300}}},
            "metrics/pretrain.json": {"data": {"cost": {"seconds": 40.0, "peak_memory_mib": 900}}},
        },
    }


SHOW = [
    {
        "rev": "workspace",
        "name": None,
        "error": None,
        "experiments": None,
        "data": _data("workspace", 10, "kmeans", 0.9, 1.0),
    },
    {
        "rev": "a" * 40,
        "name": "main",
        "error": None,
        "data": _data("a" * 40, 10, "kmeans", 0.9, 1.0),
        "experiments": [
            {
                "name": "gmm-k12",
                "executor": None,
                "revs": [
                    {
                        "rev": "b" * 40,
                        "name": "gmm-k12",
                        "error": None,
                        "experiments": None,
                        "data": _data("b" * 40, 12, "gmm", 0.8, 2.5),
                    }
                ],
            },
            {
                "name": "queued",
                "executor": "workspace",
                "revs": [
                    {
                        "rev": "c" * 40,
                        "name": "queued",
                        "error": None,
                        "experiments": None,
                        "data": {"rev": "c" * 40, "metrics": {}},
                    }
                ],
            },
        ],
    },
]


@pytest.fixture
def show_json(tmp_path):
    path = tmp_path / "show.json"
    path.write_text(json.dumps(SHOW))
    return path


def test_table_csv_markdown_and_chart_of_every_experiment(show_json, tmp_path, capsys):
    assert main(["--json", str(show_json), "--out", str(tmp_path / "cmp")]) == 0
    frame = pd.read_csv(tmp_path / "cmp/comparison.csv", index_col="experiment")
    # the workspace and the queued experiment without metrics are left out; only differing params shown
    assert list(frame.index) == ["main", "gmm-k12"]
    assert list(frame["cluster.k"]) == [10, 12] and list(frame["cluster.method"]) == ["kmeans", "gmm"]
    assert "seed" not in frame
    assert frame.loc["gmm-k12", "finetune ACC"] == pytest.approx(0.81)
    assert frame.loc["gmm-k12", "cluster NMI"] == pytest.approx(0.7)
    assert frame.loc["gmm-k12", "total s"] == pytest.approx(42.5) and frame.loc["main", "peak MiB"] == 900
    markdown = (tmp_path / "cmp/comparison.md").read_text()
    assert markdown.startswith("| experiment") and "gmm-k12" in markdown and markdown == capsys.readouterr().out
    assert Image.open(tmp_path / "cmp/comparison.png").size[0] > 300


def test_named_experiments_in_the_order_given_and_a_one_line_error(show_json, tmp_path, capsys):
    assert main(["gmm-k12", "aaaaaaa", "--json", str(show_json), "--out", str(tmp_path / "cmp")]) == 0
    assert list(pd.read_csv(tmp_path / "cmp/comparison.csv")["experiment"]) == ["gmm-k12", "main"]
    assert main(["nope", "--json", str(show_json), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no experiment named 'nope'") and "gmm-k12" in err and "\n" not in err
    assert not (tmp_path / "bad").exists()
    assert main(["--json", str(tmp_path / "absent.json")]) == 2
