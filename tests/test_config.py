"""params.yaml schema: the repo's file validates; every bad input gives one clear ``params:`` line."""

from pathlib import Path

import pydantic
import pytest
import yaml

from imageclust.clustering.params import ClusterParams
from imageclust.config import GlobalParams, load_params, read_params_file
from imageclust.data.params import DataParams
from imageclust.errors import ParamsError, UserError
from imageclust.finetune.params import FinetuneParams
from imageclust.pretrain.params import PretrainParams
from imageclust.schema import SECTIONS

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def write_params(tmp_path, data) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def params_error(path, *sections) -> str:
    """The message of the ParamsError that loading ``sections`` from ``path`` raises; checks its form."""
    with pytest.raises(ParamsError) as info:
        load_params(*(SECTIONS[s] if isinstance(s, str) else s for s in sections), path=path)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith("params:"), message
    return message


def test_repo_params_validate_every_section():
    gparams, *sections = load_params(*SECTIONS.values(), path=REPO_PARAMS)
    raw = yaml.safe_load(REPO_PARAMS.read_text())
    assert gparams.seed == raw["seed"]
    assert gparams.device == raw["device"]
    assert [type(s) for s in sections] == list(SECTIONS.values())
    by_name = dict(zip(SECTIONS, sections))
    # Values come from the file, not from the defaults.
    for name, section in by_name.items():
        for key, value in (raw.get(name) or {}).items():
            got = getattr(section, key)
            got = got.model_dump() if hasattr(got, "model_dump") else got  # a method's own block
            assert got == value, f"{name}.{key}"


def test_load_params_returns_only_requested_sections_in_order(tmp_path):
    path = write_params(tmp_path, {"seed": 3, "cluster": {"k": 4}, "data": {"test_fraction": 0.0}})
    gparams, cluster, data = load_params(SECTIONS["cluster"], SECTIONS["data"], path=path)
    assert (gparams.seed, gparams.device) == (3, "auto")
    assert isinstance(cluster, ClusterParams) and cluster.k == 4
    assert isinstance(data, DataParams) and data.test_fraction == 0.0


def test_defaults_for_empty_file_and_missing_sections(tmp_path):
    path = write_params(tmp_path, "")
    gparams, data, cluster, finetune = load_params(
        SECTIONS["data"], SECTIONS["cluster"], SECTIONS["finetune"], path=path
    )
    assert gparams == GlobalParams(seed=0, device="auto")
    assert data.name == "digits" and data.test_fraction == 0.2 and data.train_splits == ["train"]
    assert cluster.method == "kmeans" and cluster.k == 10 and cluster.pca_dim is None
    assert cluster.l2_normalize is True and cluster.whiten is False
    assert finetune.method == "auto" and finetune.scan.num_heads == 5 and finetune.scan.confidence_threshold == 0.99


def test_null_section_means_defaults(tmp_path):
    path = write_params(tmp_path, "cluster:\n")
    _, cluster = load_params(SECTIONS["cluster"], path=path)
    assert cluster == ClusterParams()


def test_sections_are_frozen():
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        ClusterParams().k = 3  # type: ignore[misc]


def test_unknown_key_in_section_names_key_and_allowed_keys(tmp_path):
    path = write_params(tmp_path, {"cluster": {"kk": 10}})
    message = params_error(path, "cluster")
    assert "cluster.kk" in message
    for allowed in ClusterParams.model_fields:
        assert allowed in message
    assert "pca_dim" in message and "kmeans" in message and "spectral" in message


def test_unknown_key_only_checked_for_loaded_sections(tmp_path):
    # Each stage validates the sections it reads; a typo elsewhere does not stop it.
    path = write_params(tmp_path, {"cluster": {"kk": 10}})
    _, data = load_params(SECTIONS["data"], path=path)
    assert data == DataParams()


def test_wrong_type(tmp_path):
    message = params_error(write_params(tmp_path, {"cluster": {"k": "ten"}}), "cluster")
    assert "cluster.k" in message
    assert "'ten'" in message
    assert "integer" in message


@pytest.mark.parametrize(
    "section, key, value, bound",
    [
        ("cluster", "k", 1, "2"),
        ("data", "test_fraction", 1.5, "1"),
        ("data", "test_fraction", -0.1, "0"),
        ("pretrain", "warmup_epochs", -1, "0"),
        ("finetune", "batch_size", 1, "2"),
        ("finetune", "checkpoint_every", 0, "1"),
    ],
)
def test_out_of_range(tmp_path, section, key, value, bound):
    message = params_error(write_params(tmp_path, {section: {key: value}}), section)
    assert f"{section}.{key}={value!r}" in message
    assert bound in message.split("invalid:", 1)[1]


def test_a_method_block_key_is_named_in_full(tmp_path):
    message = params_error(write_params(tmp_path, {"pretrain": {"moco": {"temperature": 0}}}), "pretrain")
    assert "pretrain.moco.temperature=0" in message
    message = params_error(write_params(tmp_path, {"pretrain": {"projection_dims": [128, 0]}}), "pretrain")
    assert "pretrain.projection_dims" in message and ">= 1" in message


def test_a_method_that_trains_the_encoder_needs_it(tmp_path):
    from imageclust.features.params import ExtractParams
    from imageclust.finetune.params import FinetuneParams, check_backbone

    for finetune in (
        FinetuneParams(method="deepcluster"),
        FinetuneParams(method="spectral"),
        FinetuneParams(method="scan", scan={"train_backbone": True}),
    ):
        with pytest.raises(
            ParamsError, match=f"finetune.method='{finetune.method}' is invalid with extract.backbone=pixels"
        ):
            check_backbone(finetune, ExtractParams(backbone="pixels").backbone)
        check_backbone(finetune, ExtractParams().backbone)
    for method in ("auto", "scan", "temi", "none"):  # on frozen features, any backbone
        check_backbone(FinetuneParams(method=method), "pixels")


def test_temi_centroid_init_needs_linear_heads(tmp_path):
    message = params_error(write_params(tmp_path, {"finetune": {"temi": {"hidden_dim": 64}}}), "finetune")
    assert "finetune.temi is invalid" in message and "hidden_dim=0" in message


def test_empty_train_splits_rejected(tmp_path):
    message = params_error(write_params(tmp_path, {"data": {"train_splits": []}}), "data")
    assert "data.train_splits=[]" in message


@pytest.mark.parametrize(
    "section, key, expected",
    [
        ("cluster", "method", "kmeans"),
        ("pretrain", "method", "simclr"),
        ("pretrain", "backbone", "small_cnn"),
        ("extract", "backbone", "encoder"),
        ("finetune", "method", "scan"),
        ("data", "name", "digits"),
    ],
)
def test_unknown_registry_name_lists_allowed(tmp_path, section, key, expected):
    message = params_error(write_params(tmp_path, {section: {key: "nope"}}), section)
    assert f"{section}.{key}='nope'" in message
    assert "allowed:" in message
    assert expected in message.split("allowed:", 1)[1]


def test_registry_lists_every_name(tmp_path):
    message = params_error(write_params(tmp_path, {"pretrain": {"augment": {"preset": "nope"}}}), "pretrain")
    assert "pretrain.augment.preset='nope'" in message
    for preset in ("color", "gray", "none"):
        assert preset in message
    message = params_error(write_params(tmp_path, {"pretrain": {"backbone": "nope"}}), "pretrain")
    assert "resnet18" in message and "small_cnn" in message
    message = params_error(write_params(tmp_path, {"extract": {"backbone": "nope"}}), "extract")
    assert "pixels" in message and "encoder" in message and "dinov2" in message


def test_registered_names_accepted():
    assert PretrainParams(backbone="resnet18", augment={"preset": "color"}).augment.preset == "color"
    assert FinetuneParams(method="scan", scan={"hidden_dim": 0}).scan.hidden_dim == 0


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("blur_sigma", [2.0, 1.0], "pretrain.augment.blur_sigma=[2.0, 1.0]"),
        ("erase_scale", [0.1, 1.5], "pretrain.augment.erase_scale=[0.1, 1.5]"),
        ("jitter", 1.5, "pretrain.augment.jitter=1.5"),
        ("crop_min_scale", 0, "pretrain.augment.crop_min_scale=0"),
        ("strength", 1.0, "pretrain.augment.strength"),
    ],
)
def test_augment_strengths_checked(tmp_path, key, value, expected):
    message = params_error(write_params(tmp_path, {"pretrain": {"augment": {key: value}}}), "pretrain")
    assert expected in message


def test_widths_only_where_a_backbone_takes_them(tmp_path):
    message = params_error(write_params(tmp_path, {"pretrain": {"backbone": "resnet18", "widths": [8]}}), "pretrain")
    assert "widths=[8]" in message and "small_cnn" in message
    assert PretrainParams(widths=[8, 16]).widths == [8, 16]
    assert PretrainParams(backbone="resnet32", widths=[32, 64, 128]).widths == [32, 64, 128]
    message = params_error(
        write_params(tmp_path, {"pretrain": {"backbone": "resnet32", "widths": [8, 16]}}), "pretrain"
    )
    assert "widths=[8, 16]" in message and "three widths" in message


def test_unknown_top_level_key(tmp_path):
    message = params_error(write_params(tmp_path, {"clusterr": {"k": 3}}), "cluster")
    assert "'clusterr'" in message
    assert "top-level" in message
    for allowed in ("seed", "device", "data", "cluster", "finetune"):
        assert allowed in message


@pytest.mark.parametrize("value", ["gpu", "CUDA", 1])
def test_bad_device(tmp_path, value):
    message = params_error(write_params(tmp_path, {"device": value}))
    assert f"device={value!r}" in message
    assert "auto" in message  # what is allowed


@pytest.mark.parametrize("value", [-1, "zero", 1.5, True, "3"])
def test_bad_seed(tmp_path, value):
    message = params_error(write_params(tmp_path, {"seed": value}))
    assert f"seed={value!r}" in message


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "mps"])
def test_good_devices(tmp_path, device):
    (gparams,) = load_params(path=write_params(tmp_path, {"device": device, "seed": 7}))
    assert gparams.device == device and gparams.seed == 7


def test_section_not_a_mapping(tmp_path):
    message = params_error(write_params(tmp_path, {"cluster": [1, 2]}), "cluster")
    assert "cluster" in message and "[1, 2]" in message and "mapping" in message
    message = params_error(write_params(tmp_path, {"cluster": 5}), "cluster")
    assert "cluster" in message and "5" in message


def test_file_not_a_mapping(tmp_path):
    message = params_error(write_params(tmp_path, "- a\n- b\n"))
    assert "mapping" in message


def test_invalid_yaml(tmp_path):
    path = write_params(tmp_path, "cluster:\n  k: [1, 2\n  method: kmeans\n")
    message = params_error(path, "cluster")
    assert str(path) in message
    assert "YAML" in message


def test_missing_file(tmp_path):
    path = tmp_path / "absent.yaml"
    message = params_error(path)
    assert str(path) in message and "not found" in message


def test_params_error_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        read_params_file(tmp_path / "absent.yaml")


def test_read_params_file_returns_raw_mapping(tmp_path):
    raw = read_params_file(write_params(tmp_path, {"seed": 1, "cluster": {"k": 3}}))
    assert raw == {"seed": 1, "cluster": {"k": 3}}


def test_bad_list_item_names_index_and_value(tmp_path):
    message = params_error(write_params(tmp_path, {"data": {"train_splits": ["train", 3]}}), "data")
    assert "data.train_splits.1=3" in message
    assert "string" in message


@pytest.mark.parametrize("value", [True, 2.0, "8"])
def test_counts_must_be_real_integers(tmp_path, value):
    message = params_error(write_params(tmp_path, {"cluster": {"k": value}}), "cluster")
    assert f"cluster.k={value!r}" in message


def test_float_keys_accept_integers_and_exponent_strings(tmp_path):
    # `dvc exp run -S finetune.scan.lr=1e-3` reaches params.yaml as the YAML string "1e-3"
    _, params = load_params(
        SECTIONS["finetune"], path=write_params(tmp_path, {"finetune": {"scan": {"lr": "1e-3", "entropy_weight": 2}}})
    )
    assert params.scan.lr == 0.001 and params.scan.entropy_weight == 2.0


@pytest.mark.parametrize("section", ["pretrain", "extract", "cluster", "finetune"])
def test_each_stage_depends_on_every_key_of_its_section(section):
    """A key missing from the stage's params in dvc.yaml would change nothing on `dvc exp run -S`:
    every shared key is listed, and the method blocks come in through the template only."""
    from imageclust.clustering.registry import METHODS as CLUSTER_METHODS
    from imageclust.features.registry import EXTRACTORS
    from imageclust.finetune.registry import METHODS as FINETUNE_METHODS
    from imageclust.pretrain.registry import METHODS as PRETRAIN_METHODS
    from imageclust.schema import SECTIONS

    model, selector, blocks = {
        "pretrain": (SECTIONS["pretrain"], "method", set(PRETRAIN_METHODS)),
        "extract": (SECTIONS["extract"], "backbone", set(EXTRACTORS)),
        "cluster": (SECTIONS["cluster"], "method", set(CLUSTER_METHODS)),
        "finetune": (SECTIONS["finetune"], "method", set(FINETUNE_METHODS)),
    }[section]
    stages = yaml.safe_load((REPO_PARAMS.parent / "dvc.yaml").read_text())["stages"]
    declared = set(stages[section]["params"])
    if section == "extract":  # its further spaces are the extract_spaces stage's
        assert "extract.spaces" not in declared
        declared |= set(stages["extract_spaces"]["params"])
    if selector:
        assert f"{section}.${{{section}.{selector}}}" in declared
    missing = [key for key in model.model_fields if key not in blocks and f"{section}.{key}" not in declared]
    assert not missing, f"dvc.yaml stage {section} lacks params {missing}"


def test_checks_against_the_prepared_data_only_when_it_is_this_params_data():
    from imageclust.clustering.params import ClusterParams
    from imageclust.config import GlobalParams
    from imageclust.data.params import DataParams
    from imageclust.data.prepared import preparation_key
    from imageclust.evaluate import EvaluateParams
    from imageclust.schema import check_against_prepared

    data, gparams = DataParams(), GlobalParams()
    meta = {"counts": {"train": 100, "test": 20}, "prepared_with": preparation_key(data, gparams.seed)}

    def check(meta=meta, data=data, **cluster):
        check_against_prepared(
            meta, gparams, {"data": data, "cluster": ClusterParams(**cluster), "evaluate": EvaluateParams()}
        )

    check(k=100)
    with pytest.raises(ParamsError, match=r"cluster.k=101 is invalid: larger than the 100 training samples"):
        check(k=101)
    check(k=101, method="hdbscan")  # finds its own K
    with pytest.raises(ParamsError, match=r"data.train_splits=\['val'\] is invalid: .* splits \['test', 'train'\]"):
        check(data=data.model_copy(update={"train_splits": ["val"]}), k=3)  # train_splits: same prepared data
    with pytest.raises(ParamsError, match=r"evaluate.splits=\['val'\] is invalid"):
        check_against_prepared(
            meta, gparams, {"data": data, "cluster": ClusterParams(), "evaluate": EvaluateParams(splits=["val"])}
        )
    # other data params (or an older prepared folder without the key): the download stage will redo it
    check(data=data.model_copy(update={"max_per_split": 10}), k=500)
    check(meta={"counts": {"train": 2}}, k=500)
