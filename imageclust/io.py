"""Atomic writes and safe loading: no stage leaves a half-written file that a later stage accepts.

Every writer puts its bytes under a temporary name in the destination's folder and renames
it into place only once complete, so a killed stage leaves either the old artifact or none.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes files private; outputs are not
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``path``; swap it into place when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: str | os.PathLike, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)


CHECKPOINT_FORMAT = "imageclust-checkpoint-1"


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """A checkpoint as this pipeline writes it: ``obj`` serialised, with the sha256 of those bytes
    beside them, so that a file altered or damaged afterwards is refused when it is read."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    payload = buffer.getbuffer()
    wrapped = {
        "format": CHECKPOINT_FORMAT,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8),
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(wrapped, f)  # through a file object: the same bytes whatever the temporary name


def _torch_load(source, map_location: Any, path) -> Any:
    import pickle
    import zipfile

    import torch

    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as err:
        reason = " ".join(str(err).split())[:160] or type(err).__name__
        raise DataError(
            f"{path}: refused: not a file of tensors, numbers and strings that loads safely ({reason})"
        ) from None


def load_torch(path: str | os.PathLike, map_location: Any = "cpu", ours: bool = True) -> Any:
    """Load a checkpoint without unpickling arbitrary objects (tensors, dicts, numbers, strings).

    ``ours``: written by ``save_torch``; its sha256 must match its contents. Third-party weights
    (``ours=False``) are only loaded with ``weights_only``."""
    import torch

    loaded = _torch_load(path, map_location, path)
    if not ours:
        return loaded
    if not (isinstance(loaded, dict) and loaded.get("format") == CHECKPOINT_FORMAT):
        raise DataError(
            f"{path}: refused: not a checkpoint this pipeline wrote (or one from an older version); "
            "rerun the stage that writes it"
        )
    payload = loaded["payload"].numpy().tobytes() if isinstance(loaded.get("payload"), torch.Tensor) else b""
    if hashlib.sha256(payload).hexdigest() != loaded.get("sha256"):
        raise DataError(
            f"{path}: refused: its contents do not match the sha256 written with them (altered or "
            "damaged); rerun the stage that writes it"
        )
    return _torch_load(io.BytesIO(payload), map_location, path)


def fingerprint(*parts) -> str:
    """Identifies the run a checkpoint or partial output belongs to, so a changed config never resumes a stale one."""
    text = json.dumps(
        [p.model_dump() if hasattr(p, "model_dump") else p for p in parts], sort_keys=True, default=_json_default
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def digest_files(paths, pattern: str = "*", chunk: int = 1 << 20) -> str:
    """sha256 over the names and bytes of ``paths`` (folders: their files matching ``pattern``, sorted)."""
    files: list[tuple[str, Path]] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted((f"{path.name}/{p.relative_to(path)}", p) for p in path.rglob(pattern) if p.is_file())
        else:
            files.append((path.name, path))
    h = hashlib.sha256()
    for name, file in files:
        h.update(name.encode())
        with open(file, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    return h.hexdigest()
