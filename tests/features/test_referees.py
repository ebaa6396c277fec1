"""Referee spaces (extract.referees): a fixed sample of the training rows embedded by further frozen
backbones, written beside extract.spaces for finetune.method auto to judge in."""

from __future__ import annotations

import numpy as np
import pytest

from imageclust.config import GlobalParams, load_section
from imageclust.data.prepared import load_prepared
from imageclust.errors import DataError, ParamsError
from imageclust.features import referees
from imageclust.features.params import ExtractParams
from imageclust.features.spaces import extract_spaces
from imageclust.features.stage import extract_features
from imageclust.tables import read_features, read_referees, read_spaces, space_index

CPU = GlobalParams(device="cpu")


def extract_params(referee_list, spaces=(), **shared) -> ExtractParams:
    section = {"backbone": "pixels", "num_workers": 0, "spaces": list(spaces), "referees": referee_list, **shared}
    return load_section(ExtractParams, {"extract": section})


def test_the_rows_are_a_fixed_sample_of_the_training_rows(prepared_dir):
    data = load_prepared(prepared_dir)
    train = np.flatnonzero(data.splits == "train")
    rows = referees.referee_rows(data, ["train"], size=30)
    assert len(rows) == 30 and np.isin(rows, train).all() and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(rows, referees.referee_rows(data, ["train"], size=30))  # the same every run
    np.testing.assert_array_equal(referees.referee_rows(data, ["train"], size=1000), train)  # all, when fewer
    with pytest.raises(DataError, match="extract.referees: data.train_splits: split 'none' not in"):
        referees.referee_rows(data, ["none"])


def test_each_referee_is_a_features_folder_of_the_sample_beside_the_spaces(prepared_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(referees, "REFEREE_ROWS", 25)
    params = extract_params(
        [{"backbone": "pixels", "image_size": 12}, {"backbone": "pixels", "image_size": 16, "name": "large"}],
        spaces=[{"backbone": "pixels", "image_size": 12}],
        batch_size=8,
    )
    summary = extract_spaces(prepared_dir, tmp_path / "spaces", tmp_path / "work", CPU, params, train_splits=["train"])
    assert summary["spaces"] == 1 and set(summary["referees"]) == {"pixels_12", "large"}
    assert summary["referees"]["large"]["rows"] == 25 and summary["referees"]["large"]["dim"] == 256
    assert [entry["name"] for entry in space_index(tmp_path / "spaces")] == ["pixels_12"]  # a referee is no space

    extract_features(
        prepared_dir, None, tmp_path / "features", tmp_path / "fwork", CPU, params.for_space(params.referees[0])
    )
    every_row = read_features(tmp_path / "features")  # pixels at 12 px of every row
    judged = read_referees(tmp_path / "spaces", every_row.ids)
    assert list(judged) == ["pixels_12", "large"]
    sample = judged["pixels_12"]
    assert len(sample) == 25 and set(sample.splits) == {"train"}
    position = {sample_id: row for row, sample_id in enumerate(every_row.ids)}
    rows = [position[i] for i in sample.ids]
    np.testing.assert_allclose(sample.vectors, every_row.vectors[rows], atol=1e-6)  # the same features, those rows
    assert len(read_spaces(tmp_path / "spaces", every_row.ids)) == 1

    with pytest.raises(DataError, match="referees/pixels_12: it holds samples the extract stage's features do not"):
        read_referees(tmp_path / "spaces", every_row.ids[:10])


def test_no_referees_and_an_index_without_them_read_as_none(prepared_dir, tmp_path):
    extract_spaces(prepared_dir, tmp_path / "spaces", tmp_path / "work", CPU, extract_params([]))
    assert read_referees(tmp_path / "spaces", np.array(["x"])) == {}
    (tmp_path / "spaces" / "spaces.json").write_text('{"spaces": []}')  # as written before referees existed
    assert read_referees(tmp_path / "spaces", np.array(["x"])) == {}


@pytest.mark.parametrize(
    "referee_list, spaces, message",
    [
        ([{"backbone": "encoder"}], [], "extract.referees.0.backbone='encoder' is invalid: the pretrain stage's"),
        ([{"backbone": "pixels"}, {"backbone": "pixels"}], [], "two spaces are named 'pixels_native'"),
        ([{"backbone": "pixels", "name": "x", "side": 3}], [], "unknown key extract.referees.0.side"),
        ([], [{"backbone": "pixels", "name": "referees"}], "'referees' is the referees' folder"),
    ],
)
def test_a_bad_referee_is_a_one_line_error_naming_it(referee_list, spaces, message):
    with pytest.raises(ParamsError) as err:
        extract_params(referee_list, spaces=spaces)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_split_the_data_lacks_stops_the_stage_before_any_space(prepared_dir, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("imageclust.features.spaces.extract_features", lambda *a, **k: calls.append(a))
    params = extract_params([{"backbone": "pixels"}], spaces=[{"backbone": "pixels", "image_size": 12}])
    with pytest.raises(DataError, match="extract.referees: data.train_splits: split 'val' not in the prepared data"):
        extract_spaces(prepared_dir, tmp_path / "spaces", tmp_path / "work", CPU, params, train_splits=["val"])
    assert calls == [] and not (tmp_path / "spaces").exists()
