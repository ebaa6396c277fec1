"""More representation spaces (extract.spaces): their params, their extraction beside the extract
stage's, the index the finetune stage reads, and what a bad entry says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from imageclust.config import GlobalParams, load_section
from imageclust.errors import DataError, ParamsError
from imageclust.features.params import ExtractParams
from imageclust.features.spaces import extract_spaces
from imageclust.features.stage import extract_features
from imageclust.tables import SPACES_INDEX, read_features, read_referees, read_spaces, space_index

CPU = GlobalParams(device="cpu")
REPO = Path(__file__).resolve().parents[2]


def extract_params(spaces, **shared) -> ExtractParams:
    section = {"backbone": "pixels", "num_workers": 0, "spaces": spaces, **shared}
    return load_section(ExtractParams, {"extract": section})


def test_every_space_is_a_features_folder_of_the_same_rows(prepared_dir, tmp_path):
    params = extract_params(
        [{"backbone": "pixels", "image_size": 12}, {"backbone": "pixels", "image_size": 16, "name": "large"}],
        shard_rows=40,
    )
    summary = extract_spaces(prepared_dir, tmp_path / "spaces", tmp_path / "work", CPU, params)
    assert summary["spaces"] == 2 and summary["rows"] == 96
    assert summary["dims"] == {"pixels_12": 144, "large": 256}  # gray digits at 12 and 16 px
    assert [entry["name"] for entry in space_index(tmp_path / "spaces")] == ["pixels_12", "large"]

    extract_features(prepared_dir, None, tmp_path / "features", tmp_path / "fwork", CPU, params)
    features = read_features(tmp_path / "features")
    spaces = read_spaces(tmp_path / "spaces", features.ids)
    assert {name: table.vectors.shape for name, table in spaces.items()} == {"pixels_12": (96, 144), "large": (96, 256)}
    assert features.vectors.shape == (96, 64)  # the extract stage's: native 8 px
    # 16 px pixels are the 8 px ones upsampled: each 2x2 block's mean follows the 8 px value
    large = spaces["large"].vectors.reshape(96, 8, 2, 8, 2).mean((2, 4)).reshape(96, 64)
    assert np.corrcoef(large.ravel(), features.vectors.ravel())[0, 1] > 0.9

    with pytest.raises(DataError, match="its samples differ from the extract stage's features"):
        read_spaces(tmp_path / "spaces", features.ids[::-1])


def test_two_processes_give_the_spaces_of_one(prepared_dir, tmp_path):
    """Under torchrun each process extracts its share of every space's shards; the first publishes, and
    embeds the referees' sample alone."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["device"] = "cpu"
    spaces = [{"backbone": "pixels", "image_size": 12}, {"backbone": "pixels", "image_size": 16, "name": "large"}]
    referees = [{"backbone": "pixels", "image_size": 10}]
    params["extract"].update(
        backbone="pixels", shard_rows=20, batch_size=8, num_workers=0, spaces=spaces, referees=referees
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    stage = ["-m", "stages.extract_spaces", "--params", str(tmp_path / "params.yaml"), "--data", str(prepared_dir)]
    outputs = ["--out", str(tmp_path / "spaces"), "--work", str(tmp_path / "work")]
    metrics = ["--metrics", str(tmp_path / "spaces.json")]
    result = subprocess.run(
        [*torchrun, *stage, *outputs, *metrics], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "spaces.json").read_text())
    assert summary["spaces"] == 2 and {s["world_size"] for s in summary["per_space"].values()} == {2}
    assert summary["referees"]["pixels_10"]["rows"] == summary["cost"]["images"] - 2 * 96  # every training row
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary folder left

    params = extract_params(spaces, shard_rows=20, batch_size=8, referees=referees)
    extract_spaces(prepared_dir, tmp_path / "one", tmp_path / "one-work", CPU, params)
    ids = read_features(tmp_path / "one" / "pixels_12").ids
    two, one = read_spaces(tmp_path / "spaces", ids), read_spaces(tmp_path / "one", ids)
    assert list(two) == list(one) == ["pixels_12", "large"]
    for name in one:
        np.testing.assert_array_equal(two[name].vectors, one[name].vectors)
    two, one = read_referees(tmp_path / "spaces", ids), read_referees(tmp_path / "one", ids)
    assert list(two) == list(one) == ["pixels_10"]
    np.testing.assert_array_equal(two["pixels_10"].vectors, one["pixels_10"].vectors)


def test_no_spaces_writes_an_empty_index(prepared_dir, tmp_path):
    summary = extract_spaces(prepared_dir, tmp_path / "spaces", tmp_path / "work", CPU, extract_params([]))
    assert summary["spaces"] == 0 and space_index(tmp_path / "spaces") == []
    assert json.loads((tmp_path / "spaces" / SPACES_INDEX).read_text()) == {"spaces": [], "referees": []}
    with pytest.raises(DataError, match="spaces.json missing; run the extract_spaces stage"):
        space_index(tmp_path / "absent")


def test_a_failed_space_leaves_no_folder(prepared_dir, tmp_path, monkeypatch):
    params = extract_params([{"backbone": "pixels", "image_size": 12}, {"backbone": "pixels", "image_size": 16}])
    calls = []

    def fail_on_second(*args, **kwargs):
        calls.append(Path(args[2]).name)
        if len(calls) == 2:
            raise DataError("broken backbone")
        return extract_features(*args, **kwargs)

    monkeypatch.setattr("imageclust.features.spaces.extract_features", fail_on_second)
    with pytest.raises(DataError, match="broken backbone"):
        extract_spaces(prepared_dir, tmp_path / "spaces", tmp_path / "work", CPU, params)
    assert calls == ["pixels_12", "pixels_16"]
    assert not (tmp_path / "spaces").exists() and not list(tmp_path.glob(".spaces*"))


@pytest.mark.parametrize(
    "spaces, message",
    [
        ([{"backbone": "encoder"}], "extract.spaces.0.backbone='encoder' is invalid: the pretrain stage's encoder"),
        ([{"backbone": "resnet"}], "extract.spaces.0.backbone='resnet' is invalid: unknown feature extractor"),
        ([{"backbone": "pixels"}, {"backbone": "pixels"}], "two spaces are named 'pixels_native'"),
        ([{"backbone": "pixels", "size": 3}], "unknown key extract.spaces.0.size; allowed keys in extract.spaces.0:"),
        ([{"backbone": "torchvision", "options": {"modl": "x"}}], "extract.spaces.0 is invalid: options.modl of"),
        ([{"backbone": "pixels", "name": "../up"}], "extract.spaces.0.name='../up' is invalid: must be a folder name"),
        ([{"backbone": "pixels", "image_size": 4}], "extract.spaces.0.image_size=4 is invalid"),
        ("lite2", "extract.spaces='lite2' is invalid"),
    ],
)
def test_a_bad_space_is_a_one_line_error_naming_it(spaces, message):
    with pytest.raises(ParamsError) as err:
        extract_params(spaces)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_space_takes_its_backbones_options_and_the_shared_keys():
    params = extract_params(
        [{"backbone": "torchvision", "image_size": 64, "options": {"model": "resnet18", "weights": None}}],
        batch_size=7,
        engine="torch",
    )
    space = params.for_space(params.spaces[0])
    assert (space.backbone, space.image_size, space.batch_size, space.engine) == ("torchvision", 64, 7, "torch")
    assert space.block.model == "resnet18" and space.block.weights is None
    assert params.spaces[0].label == "torchvision_64"
