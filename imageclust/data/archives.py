"""``data.root`` as a folder: a folder as is, or a ``.tar.gz``/``.tgz``/``.tar``/``.zip`` archive (a local
path or an http(s) URL) unpacked safely into a temporary folder.

Archives come from strangers, so unpacking trusts nothing in them: every member is checked before
anything is written; a member whose path is absolute or climbs out with ``..``, or that is a device
or a fifo, refuses the whole archive; links are skipped (never created, never followed); and an
archive that would unpack to more than ``MAX_UNPACKED_BYTES`` (a zip bomb) or than the free disk
space is refused up front.

Downloads are checked: a response shorter than its Content-Length is refused, and with
``data.checksum`` (``md5:HEX`` or ``sha256:HEX``, as the source publishes it) an archive, downloaded
or local, must match it; a cached download that does not is fetched again. Temporary names carry
the writing process's id, so what a killed run left behind is removed by the next one.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections import Counter
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Callable

from ..errors import DataError
from ..progress import progress
from .source import log_skip

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
ACCEPTED = "a folder, or a .tar.gz, .tgz, .tar or .zip archive (a local path or an http(s) URL)"
MAX_UNPACKED_BYTES = 64 * 2**30  # far above any image dataset we expect; a bomb goes far beyond
DOWNLOAD_TIMEOUT_S = 60  # per blocking network operation, not for the whole download
LINK = "link in archive"
DEBRIS = re.compile(r"^\..+\.pid(\d+)\..*\.(unpacked|part)$")  # our temporary names, with their writer's pid

log = logging.getLogger(__name__)


def resolve_root(root: str, download_dir: str, skipped: Counter | None = None,
                 checksum: str | None = None) -> tuple[Path, Callable[[], None]]:
    """The folder that ``root`` names, and a callable that removes what was unpacked for it.

    Links skipped while unpacking are counted in ``skipped`` (reason ``"link in archive"``);
    ``checksum`` (``md5:HEX`` or ``sha256:HEX``) is what the archive must hash to."""
    skipped = Counter() if skipped is None else skipped
    remove_debris(Path(download_dir))
    url = urllib.parse.urlparse(root).scheme in ("http", "https")
    if url:
        path = _download(root, Path(download_dir), checksum)
    else:
        path = Path(root).expanduser()
        if not path.exists():
            raise DataError(f"data.root={root} not found")
        if checksum is not None and path.is_file():
            _check_digest(path, checksum, f"data.root={root}")
    if path.is_dir():
        if checksum is not None:
            raise DataError(f"data.checksum is set but data.root={root} is a folder; a checksum applies to an archive")
        return path, lambda: None
    _check_suffix(path.name, root)
    Path(download_dir).mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(prefix=f".{path.name}.pid{os.getpid()}.", suffix=".unpacked", dir=download_dir))

    def cleanup() -> None:
        shutil.rmtree(target, ignore_errors=True)

    started = time.perf_counter()
    log.info("unpacking %s into %s", path, target)
    try:
        _unpack(path, target, skipped)
    except (tarfile.TarError, zipfile.BadZipFile, gzip.BadGzipFile, EOFError, zlib.error) as exc:
        cleanup()
        hint = f"; delete {path} to download it again" if url else ""
        raise DataError(f"{path}: not a readable archive ({exc}){hint}") from None
    except OSError as exc:  # disk full, permissions: not the archive's fault
        cleanup()
        raise DataError(f"{path}: unpacking into {download_dir} failed ({exc})") from None
    except BaseException:
        cleanup()
        raise
    log.info("unpacked %s in %.1fs", path.name, time.perf_counter() - started)
    return target, cleanup


def _check_suffix(name: str, root: str) -> None:
    if not name.lower().endswith(ARCHIVE_SUFFIXES):
        raise DataError(f"data.root={root} is not supported: expected {ACCEPTED}")


def remove_debris(download_dir: Path) -> list[Path]:
    """Remove the temporary downloads and unpacked folders of processes that no longer run (a killed
    download stage); those of a live process (another run using the same folder) are left alone."""
    removed = []
    if not download_dir.is_dir():
        return removed
    for entry in download_dir.iterdir():
        match = DEBRIS.match(entry.name)
        if match is None or _alive(int(match.group(1))):
            continue
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        removed.append(entry)
        log.info("removed %s, left by a run that was killed", entry)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def file_digest(path: Path, algorithm: str, chunk: int = 1 << 20) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _check_digest(path: Path, checksum: str, what: str, name: str | None = None) -> None:
    algorithm, expected = checksum.split(":", 1)
    got = file_digest(path, algorithm)
    if got != expected.lower():
        raise DataError(f"{what}: {name or path.name} has {algorithm} {got}, not data.checksum={checksum} "
                        "(a truncated or altered file, or the wrong checksum)")


def _download(url: str, download_dir: Path, checksum: str | None = None) -> Path:
    """Fetch ``url`` into ``download_dir`` once; later runs re-use the file if it matches ``checksum``."""
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    _check_suffix(name, url)  # refuse before spending a download on it
    path = download_dir / name
    if path.is_file():
        if checksum is None:
            return path
        try:
            _check_digest(path, checksum, f"data.root={url}")
            return path
        except DataError as err:
            log.warning("%s; downloading it again", err)
            path.unlink()
    download_dir.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s into %s", url, download_dir)
    # A temporary name, renamed once complete: an interrupted download is never mistaken for the archive.
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.pid{os.getpid()}.", suffix=".part", dir=download_dir)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            shutil.copyfileobj(response, out, length=1 << 20)
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and out.tell() != int(declared):
                raise DataError(f"data.root={url}: download truncated ({out.tell():,} of {int(declared):,} bytes); "
                                "rerun to download it again")
        if checksum is not None:
            _check_digest(Path(tmp), checksum, f"data.root={url}", name)
        os.replace(tmp, path)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise DataError(f"data.root={url}: download failed ({getattr(exc, 'reason', exc)})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _unpack(archive: Path, target: Path, skipped: Counter) -> None:
    if archive.name.lower().endswith(".zip"):
        _unpack_zip(archive, target, skipped)
    else:
        _unpack_tar(archive, target, skipped)


def _unpack_tar(archive: Path, target: Path, skipped: Counter) -> None:
    with tarfile.open(archive, "r:*") as tar:
        keep = []
        for member in tar.getmembers():  # reads every header: all checks pass before anything is written
            if member.issym() or member.islnk():
                log_skip(f"{archive.name}:{member.name}", LINK, skipped)
                continue
            if member.ischr() or member.isblk() or member.isfifo():
                _refuse(archive, member.name, "a device or fifo")
            _check_name(archive, member.name)
            if member.isfile() or member.isdir():
                keep.append(member)
        _check_size(archive, sum(m.size for m in keep if m.isfile()), target)
        try:
            # The "data" filter repeats the path checks and drops unsafe permission bits, as a second line.
            for member in progress(keep, desc=f"download: unpack {archive.name}", unit="file"):
                tar.extract(member, target, filter="data")
        except tarfile.FilterError as exc:
            _refuse(archive, exc.tarinfo.name, str(exc))


def _unpack_zip(archive: Path, target: Path, skipped: Counter) -> None:
    with zipfile.ZipFile(archive) as zf:
        keep = []
        for info in zf.infolist():
            mode = info.external_attr >> 16  # Unix mode, when the archive was made on Unix
            if stat.S_ISLNK(mode):
                log_skip(f"{archive.name}:{info.filename}", LINK, skipped)
                continue
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                _refuse(archive, info.filename, "a device or fifo")
            _check_name(archive, info.filename)
            keep.append(info)
        # Declared sizes bound what zipfile writes: it stops each member at its file_size.
        _check_size(archive, sum(info.file_size for info in keep), target)
        for info in progress(keep, desc=f"download: unpack {archive.name}", unit="file"):
            zf.extract(info, target)


def _check_name(archive: Path, name: str) -> None:
    # Lexical checks suffice: no link is ever created, so no folder inside the target can lead out of it.
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        _refuse(archive, name, "an absolute path")
    if ".." in name.replace("\\", "/").split("/"):
        _refuse(archive, name, "it would be written outside the unpacking folder")


def _check_size(archive: Path, total: int, target: Path) -> None:
    if total > MAX_UNPACKED_BYTES:
        raise DataError(f"{archive}: refusing to unpack {total / 2**30:.1f} GiB "
                        f"(more than the limit of {MAX_UNPACKED_BYTES / 2**30:.0f} GiB)")
    free = shutil.disk_usage(target).free
    if total > free:
        raise DataError(f"{archive}: unpacking needs {total / 2**30:.1f} GiB, "
                        f"only {free / 2**30:.1f} GiB free in {target.parent}")


def _refuse(archive: Path, member: str, why: str) -> None:
    raise DataError(f"{archive}: refusing member {member!r}: {why}")
