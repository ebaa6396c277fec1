"""Params presets: every preset names real keys with valid values, and turns into dvc exp run -S args."""

import pytest
import yaml

from imageclust import preset
from imageclust.errors import ParamsError
from imageclust.schema import check_across_sections, load_all


def test_flatten_and_set_args():
    flat = preset.flatten({"pretrain": {"widths": [16, 32], "moco": {"temperature_final": None}}, "seed": 1})
    assert flat == {"pretrain.widths": [16, 32], "pretrain.moco.temperature_final": None, "seed": 1}
    assert preset.set_args(flat) == [
        "-S",
        "pretrain.widths=[16, 32]",
        "-S",
        "pretrain.moco.temperature_final=null",
        "-S",
        "seed=1",
    ]


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ParamsError, match="unknown preset 'nope'; available: .*small_gray"):
        preset.load_preset("nope")


@pytest.mark.parametrize("name", preset.available())
def test_every_preset_sets_existing_keys_to_valid_values(name, tmp_path):
    params = yaml.safe_load((preset.PRESETS_DIR.parent / "params.yaml").read_text())
    for key, value in preset.load_preset(name).items():
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        assert leaf in node, f"{name}: {key} is not in params.yaml"
        node[leaf] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    check_across_sections(load_all(tmp_path / "params.yaml")[1])  # raises on an invalid value


def test_dry_run_prints_the_dvc_command(capsys):
    preset.main(["small_gray", "--dry-run", "-S", "data.name=mnist", "-n", "try"])
    out = capsys.readouterr().out
    assert out.startswith("dvc exp run -S ") and " -S pretrain.method=simclr " in out
    assert out.rstrip().endswith("-S data.name=mnist -n try")  # the user's options come last and win
