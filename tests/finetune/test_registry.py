"""A new fine-tuning method is one module plus one registry entry: the schema validates its block, the
parameters reference documents it, the stage runs it and the plot stage finds its curves."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import yaml

from imageclust.clustering.params import ClusterParams
from imageclust.clustering.stage import run_clustering
from imageclust.finetune.registry import METHODS
from imageclust.imports import REPO
from imageclust.tables import FeatureTable, read_assignments, write_features

# the whole of a new method's module, then its registry entry; run in a fresh interpreter so that the
# entry exists before the schema is built, as it would for a module listed in registry.py
NEW_METHOD = textwrap.dedent("""
    import sys
    import numpy as np
    from pydantic import Field

    from imageclust.config import Int, Section
    from imageclust.finetune import registry
    from imageclust.finetune.base import FinetuneMethod, FinetuneResult


    class Params(Section):
        shift: Int = Field(1, ge=0, description="how far every cluster id moves")
        epochs: Int = Field(2, ge=1, description="epochs of doing nothing")


    def run(run):
        for epoch in run.epochs(0, run.block.epochs, "shift"):
            run.end_epoch(epoch, run.block.epochs, {"shift/loss": 1.0 / (epoch + 1)}, lambda: {})
        clusters = (run.initial_clusters + run.block.shift) % run.num_clusters
        return FinetuneResult(clusters=clusters, confidence=np.ones(len(clusters), np.float32))


    registry.METHODS["shift"] = FinetuneMethod("shift", run, Params)

    from imageclust.cli import run_stage  # noqa: E402  (after the entry, as the registry's import would be)
    from imageclust.schema import parameters_reference  # noqa: E402
    from stages import finetune  # noqa: E402

    if sys.argv[1] == "reference":
        print(parameters_reference())
    else:
        run_stage(finetune.main, finetune.build_parser(), sys.argv[2:])
""")


def run_new_method(tmp_path, *args):
    script = tmp_path / "new_method.py"
    script.write_text(NEW_METHOD)
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )


def test_the_registry_lists_records_with_what_each_method_needs():
    for name, method in METHODS.items():
        assert method.name == name and callable(method.run)
        assert method.params.model_fields is not None
        assert isinstance(method.trains_encoder(method.params()), bool)


def test_a_new_method_is_picked_up_by_the_schema_the_reference_the_stage_and_the_plots(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    vectors = (np.eye(3)[labels] * 5 + rng.normal(scale=0.2, size=(60, 3))).astype(np.float32)
    ids = np.array([f"s{i}" for i in range(60)], dtype=object)
    write_features(tmp_path / "features", FeatureTable(ids, np.full(60, "train", dtype=object), labels, vectors), {})
    run_clustering(tmp_path / "features", tmp_path / "cluster", 0, ["train"], ClusterParams(k=3))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["device"] = "cpu"
    params["finetune"].update(method="shift", shift={"shift": 2, "epochs": 3})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    stage_args = [
        "stage",
        "--features",
        "features",
        "--clusters",
        "cluster",
        "--data",
        "none",
        "--encoder",
        "none",
        "--out",
        "finetune",
        "--checkpoints",
        "ckpt",
        "--live",
        "live",
        "--metrics",
        "finetune.json",
        "--params",
        "params.yaml",
    ]

    done = run_new_method(tmp_path, *stage_args)
    assert done.returncode == 0, done.stderr
    before = read_assignments(tmp_path / "cluster" / "assignments.parquet")
    after = read_assignments(tmp_path / "finetune" / "assignments.parquet")
    np.testing.assert_array_equal(after.clusters, (before.clusters + 2) % 3)
    assert json.loads((tmp_path / "finetune.json").read_text())["method"] == "shift"

    from imageclust.plots.curves import find_losses

    assert list(find_losses({"finetune": tmp_path / "live"})) == ["finetune shift/loss"]

    reference = run_new_method(tmp_path, "reference")
    assert reference.returncode == 0, reference.stderr
    assert "| `finetune.shift.shift` | `1` | integer >= 0 | how far every cluster id moves |" in reference.stdout

    params["finetune"]["shift"]["shift"] = -1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    refused = run_new_method(tmp_path, *stage_args)
    assert refused.returncode == 2 and "finetune.shift.shift=-1 is invalid" in refused.stderr
