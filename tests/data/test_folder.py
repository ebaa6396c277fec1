"""The image_folder source, end to end through prepare(): layouts, messy files, archives, URLs, scale."""

from __future__ import annotations

import functools
import http.server
import io
import os
import stat
import tarfile
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imageclust.data.params import DataParams
from imageclust.data import archives
from imageclust.data.prepared import load_prepared
from imageclust.data.stage import prepare
from imageclust.errors import DataError, ParamsError
from imageclust.tables import UNLABELED

CIFAR = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


def save(path: Path, image: Image.Image, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def solid(color, size=(8, 8), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


def noise(size=(64, 64), seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def encoded(image: Image.Image, fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def run(tmp_path: Path, root, **kwargs):
    """prepare() the folder or archive ``root``; return (prepared data, meta)."""
    kwargs.setdefault("download_dir", str(tmp_path / "raw"))
    out = tmp_path / "prepared"
    meta = prepare(DataParams(name="image_folder", root=str(root), **kwargs), 0, out)
    return load_prepared(out), meta


def by_id(data) -> dict:
    return {i: (data.images[k], data.splits[k], int(data.labels[k])) for k, i in enumerate(data.ids)}


def unpacked_left(tmp_path: Path) -> list[Path]:
    raw = tmp_path / "raw"
    return [p for p in raw.iterdir() if p.name.endswith(".unpacked")] if raw.exists() else []


# ---------------------------------------------------------------- layouts


def test_split_folders_with_classes(tmp_path):
    root = tmp_path / "data"
    colors = {"train/cat/a.png": (255, 0, 0), "train/cat/b.png": (200, 0, 0), "train/dog/deep/c.png": (0, 255, 0),
              "test/cat/d.png": (0, 0, 255), "test/dog/e.png": (0, 0, 200), "valid/dog/f.png": (1, 2, 3),
              "unlabelled/batch1/g.png": (9, 9, 9)}
    for rel, color in colors.items():
        save(root / rel, solid(color))
    data, meta = run(tmp_path, root)
    assert data.classes == ["cat", "dog"]
    assert meta["counts"] == {"test": 2, "train": 3, "unlabeled": 1, "valid": 1}
    rows = by_id(data)
    assert sorted(rows) == sorted(colors)
    for rel, color in colors.items():
        pixels, split, label = rows[rel]
        assert pixels.shape == (8, 8, 3) and (pixels == color).all()
        expected_split = rel.split("/")[0].replace("unlabelled", "unlabeled")
        assert split == expected_split
        assert label == (UNLABELED if split == "unlabeled" else ["cat", "dog"].index(rel.split("/")[1]))
    assert meta["skipped"] == {} and meta["notes"] == []


def test_classes_without_split_folders_get_a_stratified_split(tmp_path):
    root = tmp_path / "data"
    for c, name in enumerate(["ant", "bee"]):
        for i in range(10):
            save(root / name / f"{i}.png", solid((c * 100, i, 0)))
    data, meta = run(tmp_path, root, test_fraction=0.2)
    assert data.classes == ["ant", "bee"]
    assert meta["counts"] == {"test": 4, "train": 16}
    assert np.bincount(data.labels[data.splits == "test"]).tolist() == [2, 2]
    assert all(data.ids[k].startswith(data.classes[data.labels[k]] + "/") for k in range(len(data.ids)))


def test_images_beside_class_folders_are_skipped(tmp_path):
    root = tmp_path / "data"
    for i in range(4):
        save(root / f"{i}.png", solid((i, 0, 0)))
    save(root / "nested" / "deeper" / "x.png", solid((7, 0, 0)))  # a subfolder holding images is a class
    save(root / "other" / "y.png", solid((8, 0, 0)))
    data, meta = run(tmp_path, root, test_fraction=0.0)
    assert data.classes == ["nested", "other"] and sorted(data.ids) == ["nested/deeper/x.png", "other/y.png"]
    assert meta["skipped"] == {"outside a class folder": 4}


def test_unlabelled_folder_without_subfolders(tmp_path):
    root = tmp_path / "data"
    for i in range(8):
        save(root / f"{i}.png", solid((i, 0, 0)))
    (root / "empty").mkdir()
    data, meta = run(tmp_path, root, test_fraction=0.25)
    assert data.classes == [] and (data.labels == UNLABELED).all()
    assert meta["counts"] == {"test": 2, "train": 6} and meta["labeled"] == 0
    assert sorted(data.ids) == [f"{i}.png" for i in range(8)]


def test_messy_folder(tmp_path):
    root = tmp_path / "data"
    big = functools.partial(solid, size=(64, 64))  # as large as the truncated noise images
    for i in range(3):
        save(root / "train" / "cat" / f"{i}.png", big((255, 0, 0)))
        save(root / "train" / "dog" / f"{i}.jpg", big((0, 0, 255)), quality=95)
    save(root / "train" / "stray.png", big((0, 0, 0)))  # beside the class folders: no class
    (root / "train" / "README.txt").write_text("hello")
    (root / "train" / "cat" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    save(root / "train" / "cat" / ".hidden" / "h.png", big((1, 1, 1)))
    save(root / "__MACOSX" / "train" / "cat" / "._0.png", big((1, 1, 1)))
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    (root / "train" / "dog" / "fake.jpg").write_text("this is text, not a JPEG")
    (root / "train" / "dog" / "cut.jpg").write_bytes(encoded(noise(), "JPEG")[:1500])
    (root / "train" / "cat" / "cut.png").write_bytes(encoded(noise())[:3000])
    (root / "train" / "bird").mkdir()  # empty everywhere: dropped
    (root / "train" / "fish").mkdir()  # empty here, but not in test: kept
    save(root / "test" / "fish" / "f.png", big((0, 255, 0)))
    save(root / "test" / "cat" / "c.png", big((255, 0, 0)))
    save(root / "loose.png", big((0, 0, 0)))  # beside the split folders: no split
    data, meta = run(tmp_path, root)
    assert data.classes == ["cat", "dog", "fish"]
    assert meta["counts"] == {"test": 2, "train": 6}
    assert meta["skipped"] == {"corrupt": 2, "empty class folder": 2, "hidden": 3, "not an image": 1,
                               "not an image file": 2, "outside a class folder": 1, "outside a split folder": 1}
    assert meta["notes"] == ["empty class folder: train/bird", "empty class folder: train/fish"]
    rows = by_id(data)
    assert rows["test/fish/f.png"][2] == 2 and (rows["test/fish/f.png"][0] == (0, 255, 0)).all()
    assert "train/cat/cut.png" not in rows and "train/dog/fake.jpg" not in rows


def test_mode_conversions(tmp_path):
    root = tmp_path / "data"
    save(root / "cmyk.jpg", solid((255, 0, 0, 0), mode="CMYK"), quality=95)  # cyan ink
    rgba = solid((255, 0, 0, 255), mode="RGBA")
    rgba.putpixel((0, 0), (255, 0, 0, 0))  # fully transparent: white, as a viewer shows it
    save(root / "rgba.png", rgba)
    palette = solid(1, mode="P")
    palette.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((0, 0), 0)
    save(root / "palette.png", palette, transparency=0)
    deep = np.full((8, 8), 65535, dtype=np.uint16)
    deep[0, 0] = 0
    save(root / "deep.png", Image.fromarray(deep))
    save(root / "gray.jpg", solid(128, mode="L"), quality=95)
    assert Image.open(root / "deep.png").mode == "I;16"
    data, meta = run(tmp_path, root, test_fraction=0.0)
    assert data.images.shape == (5, 8, 8, 3) and meta["skipped"] == {}
    rows = {i: px.astype(int) for i, (px, _, _) in by_id(data).items()}
    assert np.abs(rows["cmyk.jpg"] - (0, 255, 255)).max() <= 3
    assert (rows["rgba.png"][0, 0] == 255).all() and (rows["rgba.png"][1, 1] == (255, 0, 0)).all()
    assert (rows["palette.png"][0, 0] == 255).all() and (rows["palette.png"][1, 1] == (0, 0, 255)).all()
    assert (rows["deep.png"][1, 1] == 255).all() and (rows["deep.png"][0, 0] == 0).all()
    gray = rows["gray.jpg"]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert np.abs(gray - 128).max() <= 2


def test_gray_only_folder_has_one_channel(tmp_path):
    root = tmp_path / "data"
    for i in range(4):
        save(root / f"{i}.png", solid(i * 60, mode="L"))
    data, _ = run(tmp_path, root, test_fraction=0.0)
    assert data.images.shape == (4, 8, 8, 1)


def test_mixed_sizes_are_prepared_at_the_median_shorter_side(tmp_path):
    root = tmp_path / "data"
    save(root / "cat" / "small.png", solid((255, 0, 0), size=(8, 8)))
    save(root / "cat" / "wide.png", solid((255, 0, 0), size=(20, 10)))
    save(root / "dog" / "big.png", solid((0, 0, 255), size=(16, 16)))
    data, _ = run(tmp_path, root, test_fraction=0.0)
    assert data.images.shape == (3, 10, 10, 3)  # shorter sides 8, 10, 16
    assert (data.images[data.labels == 0] == (255, 0, 0)).all()
    data, _ = run(tmp_path, root, test_fraction=0.0, image_size=12)
    assert data.images.shape == (3, 12, 12, 3)
    assert (data.images[data.labels == 0] == (255, 0, 0)).all()


def test_mixed_large_photos_are_capped(tmp_path):
    root = tmp_path / "data"
    for i, size in enumerate([(400, 300), (640, 480), (500, 700)]):
        save(root / f"{i}.jpg", solid((0, 128, 0), size=size), quality=90)
    data, _ = run(tmp_path, root, test_fraction=0.0)
    assert data.images.shape == (3, 256, 256, 3)  # median shorter side 480, capped


def test_uniform_sizes_stay_native_up_to_the_cap_and_large_ones_are_capped(tmp_path):
    for name, size, shape in [("small", (40, 30), (30, 40)), ("large", (400, 300), (256, 256))]:
        root = tmp_path / name
        for i in range(2):
            save(root / f"{i}.jpg", solid((0, 128, 0), size=size), quality=90)
        data, _ = run(tmp_path / f"{name}_out", root, test_fraction=0.0)
        assert data.images.shape == (2, *shape, 3)


def test_too_large_images_are_skipped(tmp_path):
    root = tmp_path / "data"
    for i in range(3):
        save(root / f"{i}.png", solid((i, 0, 0), size=(8, 8)))
    save(root / "bomb.png", solid((0, 0, 0), size=(64, 64)))
    data, meta = run(tmp_path, root, test_fraction=0.0, max_image_pixels=100)
    assert len(data.ids) == 3 and meta["skipped"] == {"too large": 1}


def test_missing_and_unsupported_roots(tmp_path):
    with pytest.raises(DataError, match=r"^data.root=.*nowhere not found$"):
        run(tmp_path, tmp_path / "nowhere")
    odd = tmp_path / "data.rar"
    odd.write_bytes(b"Rar!")
    with pytest.raises(DataError, match=r"\.tar\.gz, \.tgz, \.tar or \.zip") as err:
        run(tmp_path, odd)
    assert "\n" not in str(err.value)
    with pytest.raises(ParamsError, match="data.root=None"):
        prepare(DataParams(name="image_folder"), 0, tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no usable images"):
        run(tmp_path, tmp_path / "empty")


# ---------------------------------------------------------------- archives


def fake_dataset(root: Path) -> Path:
    """A CIFAR-like folder: one top folder holding train/test splits of two classes."""
    for s, split in enumerate(["train", "test"]):
        for c, name in enumerate(["cat", "dog"]):
            for i in range(3):
                save(root / "fake" / split / name / f"{i}.png", solid((s * 100, c * 100, i)))
    save(root / "__MACOSX" / "fake" / "._junk.png", solid((0, 0, 0)))  # beside the top folder, as macOS zips do
    return root


def make_archive(folder: Path, path: Path) -> Path:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in files:
                zf.write(p, p.relative_to(folder).as_posix())
    else:
        with tarfile.open(path, "w:gz" if path.name.endswith(("gz", "tgz")) else "w") as tar:
            for p in files:
                tar.add(p, p.relative_to(folder).as_posix())
    return path


def test_archives_match_the_folder(tmp_path):
    folder = fake_dataset(tmp_path / "src")
    reference, ref_meta = run(tmp_path / "plain", folder)
    assert reference.classes == ["cat", "dog"] and ref_meta["counts"] == {"test": 6, "train": 6}
    assert reference.ids[0] == "test/cat/0.png"  # relative to the top folder: the same for every form
    for name in ["fake.tar.gz", "fake.tgz", "fake.tar", "fake.zip"]:
        archive = make_archive(folder, tmp_path / name)
        data, meta = run(tmp_path / name.replace(".", "_"), archive)
        assert np.array_equal(data.images, reference.images), name
        assert list(data.ids) == list(reference.ids) and list(data.splits) == list(reference.splits)
        assert np.array_equal(data.labels, reference.labels)
        assert {**meta, "prepared_with": None} == {**ref_meta, "prepared_with": None}  # other data.root
        assert unpacked_left(tmp_path / name.replace(".", "_")) == []  # the unpacked copy is gone


def evil_tar(path: Path, members: list[tarfile.TarInfo]) -> Path:
    payload = encoded(solid((255, 0, 0)))
    with tarfile.open(path, "w:gz") as tar:
        for i in range(4):
            info = tarfile.TarInfo(f"top/cat/{i}.png")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        for info in members:
            if info.isfile():
                info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload) if info.isfile() else None)
    return path


def evil_zip(path: Path, names: list[str], links: list[str] = ()) -> Path:
    payload = encoded(solid((255, 0, 0)))
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(4):
            zf.writestr(f"top/cat/{i}.png", payload)
        for name in names:
            zf.writestr(name, payload)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize("kind", ["tar", "zip"])
@pytest.mark.parametrize("member", ["../evil.png", "top/../../evil.png", "ABSOLUTE"])
def test_escaping_members_are_refused(tmp_path, kind, member):
    if member == "ABSOLUTE":
        member = str(tmp_path / "evil.png")
    archive = (evil_tar(tmp_path / "bad.tar.gz", [tarfile.TarInfo(member)]) if kind == "tar"
               else evil_zip(tmp_path / "bad.zip", [member]))
    with pytest.raises(DataError) as err:
        run(tmp_path, archive)
    message = str(err.value)
    assert "\n" not in message and archive.name in message and repr(member) in message
    assert not [p for p in tmp_path.rglob("*evil*")]
    assert unpacked_left(tmp_path) == []


def test_devices_and_fifos_are_refused(tmp_path):
    fifo = tarfile.TarInfo("top/cat/pipe")
    fifo.type = tarfile.FIFOTYPE
    with pytest.raises(DataError, match="refusing member 'top/cat/pipe': a device or fifo"):
        run(tmp_path, evil_tar(tmp_path / "bad.tar.gz", [fifo]))
    assert unpacked_left(tmp_path) == []


def test_links_are_skipped_and_counted(tmp_path):
    symlink = tarfile.TarInfo("top/cat/link.png")
    symlink.type, symlink.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hardlink = tarfile.TarInfo("top/cat/hard.png")
    hardlink.type, hardlink.linkname = tarfile.LNKTYPE, "top/cat/0.png"
    outward = tarfile.TarInfo("top/cat/up.png")
    outward.type, outward.linkname = tarfile.SYMTYPE, "../../../../evil.png"
    data, meta = run(tmp_path / "t", evil_tar(tmp_path / "links.tar.gz", [symlink, hardlink, outward]),
                     test_fraction=0.0)
    assert sorted(data.ids) == [f"{i}.png" for i in range(4)]  # unlabelled: the top and class folder unwrap
    assert meta["skipped"] == {"link in archive": 3}
    data, meta = run(tmp_path / "z", evil_zip(tmp_path / "links.zip", [], links=["top/cat/link.png"]),
                     test_fraction=0.0)
    assert len(data.ids) == 4 and meta["skipped"] == {"link in archive": 1}
    assert not list(tmp_path.rglob("*evil*"))


def test_zip_bomb_is_refused_before_unpacking(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("top/cat/0.png", encoded(solid((1, 2, 3))))
        zf.writestr("top/cat/zeros.png", b"\0" * (4 << 20))  # 4 MiB of zeros: a few KiB compressed
    assert bomb.stat().st_size < 64 << 10
    monkeypatch.setattr(archives, "MAX_UNPACKED_BYTES", 1 << 20)
    with pytest.raises(DataError, match="bomb.zip: refusing to unpack"):
        run(tmp_path, bomb)
    assert unpacked_left(tmp_path) == []


def test_unpacked_copy_is_removed_when_prepare_fails(tmp_path):
    folder = tmp_path / "src"
    save(folder / "top" / "cat" / "a.png", solid((1, 2, 3), size=(8, 8)))
    save(folder / "top" / "cat" / "b.png", solid((1, 2, 3), size=(9, 9)))
    archive = make_archive(folder, tmp_path / "sizes.tar.gz")
    with pytest.raises(ParamsError, match="data.splits"):  # fails inside prepare, after listing
        run(tmp_path, archive, splits=["validation"])
    assert (tmp_path / "raw").exists() and unpacked_left(tmp_path) == []
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(archive.read_bytes()[:100])
    with pytest.raises(DataError, match="broken.tar.gz: not a readable archive"):
        run(tmp_path, broken)
    assert unpacked_left(tmp_path) == []


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 (the stdlib's name)
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def http_root(tmp_path):
    """A local web server over ``tmp_path / "www"``; yields (base URL, the list of requested paths)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = type("Handler", (_CountingHandler,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.requests, www
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_url_is_downloaded_once(tmp_path, http_root):
    base, requests, www = http_root
    make_archive(fake_dataset(tmp_path / "src"), www / "fake.tgz")
    first, _ = run(tmp_path / "a", f"{base}/fake.tgz", download_dir=str(tmp_path / "raw"))
    second, _ = run(tmp_path / "b", f"{base}/fake.tgz", download_dir=str(tmp_path / "raw"))
    assert requests == ["/fake.tgz"]
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["fake.tgz"]  # no partial or unpacked files
    assert list(first.ids) == list(second.ids) and len(first.ids) == 12
    with pytest.raises(DataError, match="download failed"):
        run(tmp_path / "c", f"{base}/missing.zip")
    with pytest.raises(DataError, match="is not supported"):
        run(tmp_path / "d", f"{base}/page.html")
    assert requests == ["/fake.tgz", "/missing.zip"]
    assert not (tmp_path / "c" / "raw").exists() or not list((tmp_path / "c" / "raw").iterdir())


def test_checksum_of_a_download_and_of_a_local_archive(tmp_path, http_root):
    import hashlib

    base, requests, www = http_root
    make_archive(fake_dataset(tmp_path / "src"), www / "fake.tgz")
    md5 = "md5:" + hashlib.md5((www / "fake.tgz").read_bytes()).hexdigest()
    sha = "sha256:" + hashlib.sha256((www / "fake.tgz").read_bytes()).hexdigest()
    raw = str(tmp_path / "raw")
    run(tmp_path / "a", f"{base}/fake.tgz", download_dir=raw, checksum=md5)
    # a cached copy that was cut short is fetched again, not reused
    cached = tmp_path / "raw" / "fake.tgz"
    cached.write_bytes(cached.read_bytes()[:100])
    data, _ = run(tmp_path / "b", f"{base}/fake.tgz", download_dir=raw, checksum=sha)
    assert requests == ["/fake.tgz", "/fake.tgz"] and len(data.ids) == 12
    wrong = "sha256:" + "0" * 64
    with pytest.raises(DataError, match=r"fake.tgz has sha256 [0-9a-f]{64}, not data.checksum=sha256:0000"):
        run(tmp_path / "c", f"{base}/fake.tgz", download_dir=str(tmp_path / "raw2"), checksum=wrong)
    assert not (tmp_path / "raw2" / "fake.tgz").exists()  # a download that fails the check is not kept
    with pytest.raises(DataError, match="not data.checksum"):
        run(tmp_path / "d", www / "fake.tgz", checksum=wrong)  # a local archive too
    run(tmp_path / "e", www / "fake.tgz", checksum=md5)
    with pytest.raises(DataError, match="applies to an archive"):
        run(tmp_path / "f", tmp_path / "src", checksum=md5)
    with pytest.raises(ValueError, match="md5: and 32 hex digits"):
        DataParams(checksum="md5:abc")


def test_a_response_shorter_than_its_content_length_is_refused(tmp_path, monkeypatch):
    import io as io_module

    class Short(io_module.BytesIO):
        headers = {"Content-Length": "1000"}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(archives.urllib.request, "urlopen", lambda url, timeout: Short(b"x" * 10))
    with pytest.raises(DataError, match=r"download truncated \(10 of 1,000 bytes\)"):
        run(tmp_path, "http://example.invalid/data.zip")
    assert list((tmp_path / "raw").iterdir()) == []


def test_what_a_killed_download_left_is_removed_by_the_next_run(tmp_path):
    import subprocess
    import sys

    raw = tmp_path / "raw"
    raw.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (raw / f".fake.tgz.pid{dead}.x1.unpacked").mkdir()
    (raw / f".fake.tgz.pid{dead}.x1.unpacked" / "a.png").write_bytes(b"x")
    (raw / f".fake.tgz.pid{dead}.x2.part").write_bytes(b"x")
    live = raw / f".other.tgz.pid{os.getpid()}.x3.unpacked"  # a run still going: left alone
    live.mkdir()
    make_archive(fake_dataset(tmp_path / "src"), tmp_path / "fake.tgz")
    run(tmp_path, tmp_path / "fake.tgz")
    assert sorted(p.name for p in raw.iterdir()) == [live.name]


# ---------------------------------------------------------------- scale and real data


def test_memory_stays_bounded(tmp_path):  # ~5 s, most of it writing the files
    root = tmp_path / "data"
    n, side = 3000, 64
    base = np.asarray(noise((side, side)))
    for i in range(n):
        save(root / f"c{i % 3}" / f"{i:05d}.png", Image.fromarray(np.roll(base, i, axis=1)), compress_level=0)
    decoded = n * side * side * 3  # 36.9 MB if every image were held at once
    tracemalloc.start()
    try:
        started = time.perf_counter()
        data, meta = run(tmp_path, root, image_size=32, test_fraction=0.1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert data.images.shape == (n, 32, 32, 3) and meta["skipped"] == {}
    assert peak < decoded / 3, f"peak {peak / 1e6:.1f} MB for {decoded / 1e6:.1f} MB of pixels"
    print(f"prepared {n} images in {time.perf_counter() - started:.1f}s, peak Python heap {peak / 1e6:.1f} MB")


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR.exists(), reason=f"{CIFAR} not found")
def test_cifar10_archive(tmp_path):
    data, meta = run(tmp_path, CIFAR, max_per_split=200)
    assert data.images.shape == (400, 32, 32, 3)
    assert data.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert meta["counts"] == {"test": 200, "train": 200} and meta["skipped"] == {}
    for split in ("train", "test"):
        assert np.bincount(data.labels[data.splits == split], minlength=10).tolist() == [20] * 10
    assert data.ids[0].startswith("test/airplane/") and data.images.std() > 20
    assert unpacked_left(tmp_path) == []


def test_exif_orientation_is_applied(tmp_path):
    from imageclust.data.images import to_canonical

    image = Image.new("L", (4, 2), 0)
    image.putpixel((3, 0), 255)  # top-right pixel
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    path = tmp_path / "rotated.png"
    image.save(path, exif=exif)
    pixels = to_canonical(Image.open(path), None, 1)[..., 0]
    assert pixels.shape == (4, 2)  # upright: the stored 4 wide x 2 high becomes 2 wide x 4 high
    assert pixels[3, 1] == 255 and pixels.sum() == 255  # top right ends bottom right after a clockwise turn
