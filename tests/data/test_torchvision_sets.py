"""torchvision datasets and Tiny-ImageNet: fakes with torchvision's attributes for every spec (fast),
a fake Tiny-ImageNet folder, download failures, and real MNIST/Fashion-MNIST when they are at hand (slow)."""

from __future__ import annotations

import logging
import pickle
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision.datasets
from PIL import Image

from imageclust.data.params import DataParams
from imageclust.data import tiny_imagenet, torchvision_sets
from imageclust.data.prepared import load_prepared
from imageclust.data.registry import DATASETS
from imageclust.data.stage import prepare
from imageclust.errors import DataError, ParamsError
from imageclust.tables import UNLABELED

SHARED_TORCHVISION = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "torchvision"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """A download attempt fails here as it would offline, instead of reaching the internet."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@dataclass
class Case:
    cls: str
    layout: str  # how the fake stores pixels: hw (torch), hw_numpy, hwc, chw, files
    counts: dict  # split -> number of samples
    shape: tuple  # (h, w, c) of a sample as read, and as prepared
    num_classes: int = 10
    has_classes: bool = True  # whether the torchvision class exposes .classes
    labels_attr: str = "targets"


TT = {"train": 7, "test": 5}
CASES = {
    "mnist": Case("MNIST", "hw", TT, (6, 5, 1)),
    "fashion_mnist": Case("FashionMNIST", "hw", TT, (6, 5, 1)),
    "kmnist": Case("KMNIST", "hw", TT, (6, 5, 1)),
    "usps": Case("USPS", "hw_numpy", TT, (4, 4, 1), has_classes=False),
    "cifar10": Case("CIFAR10", "hwc", TT, (5, 6, 3)),
    "cifar100": Case("CIFAR100", "hwc", TT, (5, 6, 3), num_classes=100),
    "cifar100_20": Case("CIFAR100", "hwc", TT, (5, 6, 3), num_classes=20),
    "stl10": Case("STL10", "chw", {"train": 6, "test": 4, "unlabeled": 9}, (7, 5, 3), labels_attr="labels"),
    "svhn": Case("SVHN", "chw", {"train": 6, "test": 4, "extra": 3}, (5, 4, 3), has_classes=False,
                 labels_attr="labels"),
    "gtsrb": Case("GTSRB", "files", {"train": 4, "test": 3}, (32, 32, 3), num_classes=43, has_classes=False),
}
GTSRB_SIZES = [(15, 20), (31, 25), (40, 40), (22, 17)]  # (w, h) of the fake files


def split_of(kwargs: dict) -> str:
    return kwargs["split"] if "split" in kwargs else ("train" if kwargs["train"] else "test")


def fake_split(case: Case, root: Path, split: str, seed: int):
    """(attributes of the fake dataset, expected pixels as (h, w, c) or file sizes, expected labels)."""
    rng = np.random.default_rng(seed)
    n = case.counts[split]
    labels = rng.integers(0, case.num_classes, n)
    if split == "unlabeled":
        labels = np.full(n, -1)  # as torchvision's STL10 marks them
    attrs = {"classes": [f"class{c}" for c in range(case.num_classes)]} if case.has_classes else {}
    if case.layout == "files":
        folder = root / "gtsrb" / split
        folder.mkdir(parents=True, exist_ok=True)
        samples, sizes = [], []
        for i in range(n):
            w, h = GTSRB_SIZES[i % len(GTSRB_SIZES)]
            path = folder / f"{i:05d}.{'ppm' if i % 2 == 0 else 'png'}"
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
            samples.append((str(path), int(labels[i])))
            sizes.append((w, h))
        return {**attrs, "_samples": samples}, sizes, labels
    hwc = rng.integers(0, 256, (n, *case.shape), dtype=np.uint8)
    if case.layout == "hw":  # torchvision's MNIST family keeps tensors
        data, targets = torch.from_numpy(hwc[..., 0].copy()), torch.from_numpy(labels)
    else:
        data = {"hw_numpy": hwc[..., 0].copy(), "hwc": hwc,
                "chw": np.ascontiguousarray(hwc.transpose(0, 3, 1, 2))}[case.layout]
        targets = labels if case.labels_attr == "labels" else [int(x) for x in labels]  # CIFAR, USPS: lists
    return {**attrs, "data": data, case.labels_attr: targets, "base_folder": "cifar-100-python"}, hwc, labels


def install_fake(monkeypatch, name: str, root: Path):
    """Replace the torchvision class with a fake; return (constructor calls, expected per split)."""
    case = CASES[name]
    calls, expected = [], {}
    for k, split in enumerate(case.counts):
        expected[split] = fake_split(case, root, split, seed=k)

    class Fake:
        def __init__(self, root, download=False, **kwargs):
            assert download is True
            calls.append(split_of(kwargs))
            for key, value in expected[split_of(kwargs)][0].items():
                setattr(self, key, value)

    monkeypatch.setattr(torchvision.datasets, case.cls, Fake)
    if name == "cifar100_20":
        write_coarse_pickles(root, expected)
    return calls, expected


def write_coarse_pickles(root: Path, expected: dict) -> None:
    """The parts of cifar-100-python/{train,test,meta} that the coarse labels come from."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for split, (_, _, coarse) in expected.items():
        with open(folder / split, "wb") as f:
            pickle.dump({"coarse_labels": [int(c) for c in coarse], "fine_labels": [0] * len(coarse)}, f)
        expected[split][0]["targets"] = [99] * len(coarse)  # the fine labels, which must not be used
    with open(folder / "meta", "wb") as f:
        pickle.dump({"coarse_label_names": [f"super{c}" for c in range(20)],
                     "fine_label_names": [f"fine{c}" for c in range(100)]}, f)


def test_every_spec_is_registered_and_faked():
    assert set(torchvision_sets.SPECS) == set(CASES)
    assert set(CASES) | {"tiny_imagenet"} <= set(DATASETS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_source_from_fake(monkeypatch, tmp_path, name):
    case = CASES[name]
    calls, expected = install_fake(monkeypatch, name, tmp_path)
    source = DATASETS[name](DataParams(name=name, root=str(tmp_path)), 0)

    assert calls == list(case.counts)
    assert len(set(source.ids.tolist())) == len(source) == sum(case.counts.values())
    assert source.ids[0] == f"{name}-{next(iter(case.counts))}-00000"
    assert source.splits.tolist() == [s for s, n in case.counts.items() for _ in range(n)]
    want_labels = np.concatenate([np.where(e[2] < 0, UNLABELED, e[2]) for e in expected.values()])
    np.testing.assert_array_equal(source.labels, want_labels)
    if name == "cifar100_20":
        assert source.classes == [f"super{c}" for c in range(20)]
    elif case.has_classes:
        assert source.classes == [f"class{c}" for c in range(case.num_classes)]
    else:
        assert source.classes == [str(c) for c in range(case.num_classes)]

    i = 0
    for split, (_, pixels, _) in expected.items():
        for j in range(case.counts[split]):
            sample = source.read(i)
            if case.layout == "files":  # native size, decoded lazily
                assert isinstance(sample, Image.Image) and sample.size == pixels[j] and sample.mode == "RGB"
            else:
                assert sample.dtype == np.uint8 and sample.flags.c_contiguous
                np.testing.assert_array_equal(sample, pixels[j])  # no axis got swapped
            i += 1
    if case.layout == "files":
        assert source.sizes is None and source.default_size == 32
    else:
        assert (source.sizes == case.shape[:2]).all() and (source.color == (case.shape[2] == 3)).all()


@pytest.mark.parametrize("name", sorted(CASES))
def test_prepare_from_fake(monkeypatch, tmp_path, name):
    case = CASES[name]
    install_fake(monkeypatch, name, tmp_path / "raw")
    meta = prepare(DataParams(name=name, root=str(tmp_path / "raw")), 0, tmp_path / "prepared")
    data = load_prepared(tmp_path / "prepared")

    assert meta["counts"] == case.counts
    assert data.images.shape == (sum(case.counts.values()), *case.shape)
    assert data.images.dtype == np.uint8
    assert len(data.classes) == case.num_classes
    assert meta["labeled"] == sum(n for s, n in case.counts.items() if s != "unlabeled")


def test_stl10_unlabeled_split_is_unlabeled_and_only_loaded_on_request(monkeypatch, tmp_path):
    calls, _ = install_fake(monkeypatch, "stl10", tmp_path)
    source = DATASETS["stl10"](DataParams(name="stl10", root=str(tmp_path), splits=["train", "unlabeled"],
                                          train_splits=["train", "unlabeled"]), 0)
    assert calls == ["train", "unlabeled"]
    assert (source.labels[source.splits == "unlabeled"] == UNLABELED).all()
    assert (source.labels[source.splits == "train"] >= 0).all()

    calls.clear()
    meta = prepare(DataParams(name="stl10", root=str(tmp_path), splits=["train", "test"]), 0, tmp_path / "out")
    assert calls == ["train", "test"] and meta["counts"] == {"train": 6, "test": 4}


def test_unknown_split_is_a_params_error(monkeypatch, tmp_path):
    calls, _ = install_fake(monkeypatch, "svhn", tmp_path)
    with pytest.raises(ParamsError, match="svhn has splits"):
        DATASETS["svhn"](DataParams(name="svhn", root=str(tmp_path), splits=["train", "validation"]), 0)
    assert calls == []


@pytest.mark.parametrize("name, module", [("mnist", "mnist"), ("cifar10", "cifar"), ("stl10", "stl10")])
def test_missing_files_without_network_is_one_line_data_error(monkeypatch, tmp_path, name, module):
    def offline(url, *args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(getattr(torchvision.datasets, module), "download_and_extract_archive", offline)
    root = tmp_path / "missing"
    with pytest.raises(DataError) as err:
        prepare(DataParams(name=name, root=str(root)), 0, tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{name}: cannot download to {root} (no network?): ")
    assert not (tmp_path / "out").exists()


# --- Tiny-ImageNet ---------------------------------------------------------------------------------

WNIDS = ["n02", "n01", "n03"]  # unsorted, as in the real wnids.txt


def fake_tiny_imagenet(base: Path) -> dict:
    """A few 64x64 JPEGs per split; returns the expected val labels by file name."""
    rng = np.random.default_rng(0)

    def jpeg(path: Path, gray: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        shape = (64, 64) if gray else (64, 64, 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)

    for wnid in WNIDS:
        for i in range(2):
            jpeg(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", gray=(wnid == "n03" and i == 1))
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    val = {"val_0.JPEG": "n03", "val_1.JPEG": "n01", "val_2.JPEG": "n02", "val_3.JPEG": "n01"}
    for file in val:
        jpeg(base / "val" / "images" / file)
    (base / "val" / "val_annotations.txt").write_text(
        "".join(f"{file}\t{wnid}\t0\t0\t63\t63\n" for file, wnid in val.items()))
    for i in range(3):
        jpeg(base / "test" / "images" / f"test_{i}.JPEG")
    (base / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (base / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\tEuropean fire salamander, "
                                    "Salamandra salamandra\nn03\tbullfrog\nn99\tunused\n")
    return {file: sorted(WNIDS).index(wnid) for file, wnid in val.items()}


@pytest.mark.parametrize("inner", [True, False], ids=["root/tiny-imagenet-200", "root itself"])
def test_tiny_imagenet_from_folder(tmp_path, inner):
    base = tmp_path / "tiny-imagenet-200" if inner else tmp_path
    val_labels = fake_tiny_imagenet(base)
    source = tiny_imagenet.load(DataParams(name="tiny_imagenet", root=str(tmp_path)), 0)

    assert source.classes == ["goldfish", "European fire salamander", "bullfrog"]  # n01, n02, n03
    assert source.splits.tolist() == ["train"] * 6 + ["val"] * 4 + ["test"] * 3
    assert source.labels[:6].tolist() == [0, 0, 1, 1, 2, 2]
    val = source.splits == "val"
    assert source.labels[val].tolist() == [val_labels[f"val_{i}.JPEG"] for i in range(4)]
    assert (source.labels[source.splits == "test"] == UNLABELED).all()
    assert "tiny_imagenet-val-val_0" in source.ids.tolist()

    meta = prepare(DataParams(name="tiny_imagenet", root=str(tmp_path)), 0, tmp_path / "out")
    data = load_prepared(tmp_path / "out")
    assert data.images.shape == (13, 64, 64, 3) and meta["counts"] == {"train": 6, "val": 4, "test": 3}
    gray = data.images[list(data.ids).index("tiny_imagenet-train-n03_1")]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert meta["labeled"] == 10


def test_tiny_imagenet_only_requested_splits(tmp_path):
    fake_tiny_imagenet(tmp_path / "tiny-imagenet-200")
    (tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt").unlink()  # never read for train+test
    source = tiny_imagenet.load(DataParams(name="tiny_imagenet", root=str(tmp_path), splits=["train", "test"]), 0)
    assert set(source.splits.tolist()) == {"train", "test"}


def test_tiny_imagenet_missing_without_network_is_one_line_data_error(monkeypatch, tmp_path):
    calls = []

    def offline(url, download_root, *args, **kwargs):
        calls.append((url, download_root))
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", offline)
    with pytest.raises(DataError) as err:
        tiny_imagenet.load(DataParams(name="tiny_imagenet", root=str(tmp_path / "raw")), 0)
    assert calls == [(tiny_imagenet.URL, str(tmp_path / "raw"))]
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(f"tiny_imagenet: cannot download to {tmp_path / 'raw'} (no network?): ")


# --- real data ---------------------------------------------------------------------------------------


def shared_root() -> Path:
    if not SHARED_TORCHVISION.is_dir():
        pytest.skip(f"no shared torchvision datasets at {SHARED_TORCHVISION}")
    return SHARED_TORCHVISION


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_real_subset_is_stratified(tmp_path, name):
    params = DataParams(name=name, root=str(shared_root()), max_per_split=500)
    meta = prepare(params, 0, tmp_path / "out")
    data = load_prepared(tmp_path / "out")
    assert data.images.shape == (1000, 28, 28, 1) and len(data.classes) == 10
    assert meta["counts"] == {"train": 500, "test": 500}
    full = DATASETS[name](params, 0)
    for split in ("train", "test"):
        # Stratified keeps each class's share: 50 +- 1 for balanced Fashion-MNIST, but MNIST's classes
        # are not balanced (11% ones in train), so the target is the class's share of 500, not 50.
        share = np.bincount(full.labels[full.splits == split], minlength=10) / (full.splits == split).sum()
        per_class = np.bincount(data.labels[data.splits == split], minlength=10)
        assert np.abs(per_class - 500 * share).max() <= 1, (per_class, 500 * share)
        if name == "fashion_mnist":
            assert np.abs(per_class - 50).max() <= 1, per_class
    assert data.images.max() > 200  # real pixels, not a blank array


@pytest.mark.slow
def test_real_mnist_full(tmp_path):
    root = shared_root()
    started = time.perf_counter()
    meta = prepare(DataParams(name="mnist", root=str(root)), 0, tmp_path / "out")
    seconds = time.perf_counter() - started
    logging.getLogger(__name__).warning("full MNIST prepare took %.2fs", seconds)
    assert meta["counts"] == {"train": 60000, "test": 10000}
    data = load_prepared(tmp_path / "out")
    assert data.images.shape == (70000, 28, 28, 1) and data.labels[:5].tolist() == [5, 0, 4, 1, 9]
