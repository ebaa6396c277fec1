"""Params presets: every preset names real keys with valid values, and turns into dvc exp run -S args."""

import os
import subprocess
import sys

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


def _git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


@pytest.fixture
def preset_project(tmp_path, monkeypatch):
    """A git + DVC project with the repository's params.yaml and one stage that records the params
    it ran with, so a real `dvc exp run` shows what a preset made of them."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text((preset.PRESETS_DIR.parent / "params.yaml").read_text())
    (root / "dvc.yaml").write_text(
        "stages:\n  record:\n    cmd: python -c \"import shutil; shutil.copy('params.yaml', 'ran_with.yaml')\"\n"
        "    params: [data, extract, pretrain, cluster, finetune]\n    outs: [{ran_with.yaml: {cache: false}}]\n"
    )
    _git(root, "init", "-q")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "empty")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True, env=env)
    (root / ".gitignore").write_text("/ran_with.yaml\n")
    _git(root, "add", "-A")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "defaults")
    monkeypatch.chdir(root)
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    return root


def _ran_with(root) -> dict:
    return preset.flatten(yaml.safe_load((root / "ran_with.yaml").read_text()))


def test_two_presets_in_a_row_each_start_from_the_committed_params(preset_project, capfd):
    """photos_frozen sets extract.backbone; small_gray does not, and must not inherit it (it used to
    cluster EfficientNet features of 16 px digits, silently). ``capfd``: the preset's `dvc exp run`
    writes to the file descriptors, where ``capsys`` does not look."""
    committed = preset.flatten(yaml.safe_load((preset_project / "params.yaml").read_text()))
    with pytest.raises(SystemExit) as first:
        preset.main(["photos_frozen"])
    assert first.value.code == 0
    assert _ran_with(preset_project)["extract.backbone"] == "efficientnet_lite2"
    capfd.readouterr()

    with pytest.raises(SystemExit) as second:
        preset.main(["small_gray", "-S", "seed=3"])
    assert second.value.code == 0
    ran = _ran_with(preset_project)
    expected = {**committed, **preset.load_preset("small_gray"), "seed": 3}
    assert ran == expected
    said = capfd.readouterr().err
    assert "preset small_gray resets to the committed params.yaml: " in said
    assert "extract.backbone ('efficientnet_lite2' -> 'encoder')" in said


def test_leftover_keys_name_what_the_preset_does_not_set():
    workspace = {"extract": {"backbone": "efficientnet_lite0", "image_size": 160}, "seed": 0}
    committed = {"extract": {"backbone": "pixels", "image_size": 32}, "seed": 0}
    assert preset.leftover_keys(workspace, committed, {"extract.image_size": 16}) == {
        "extract.backbone": ("efficientnet_lite0", "pixels")
    }


def test_a_preset_refuses_an_uncommitted_params_file(tmp_path, monkeypatch):
    _git(tmp_path, "init", "-q")
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="params.yaml: not committed in git .*presets start from it: commit it first"):
        preset.main(["small_gray", "--dry-run"])
    assert (tmp_path / "params.yaml").read_text() == "seed: 0\n"
