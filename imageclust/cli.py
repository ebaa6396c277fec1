"""What every stage script shares: argument parsing, logging and turning user errors into one line."""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import cost
from .errors import DataError, UserError
from .io import write_json

EXIT_USER_ERROR = 2
FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(err: OSError) -> bool:
    """The device is full (pyarrow's writers report it in the message, without an errno)."""
    return err.errno in FULL or "No space left on device" in str(err)


def _fail(message: str) -> None:
    """One line on stderr, on a line of its own (a progress bar the error interrupted is closed first)."""
    tqdm = sys.modules.get("tqdm")
    if tqdm is not None:
        for bar in list(getattr(tqdm.tqdm, "_instances", ())):
            bar.close()
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def run_stage(
    main: Callable[[argparse.Namespace], None], parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> None:
    """Parse arguments, run ``main`` and exit 2 with a one-line message on a ``UserError``."""
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    cost.start()
    try:
        main(args)
    except UserError as err:
        _fail(str(err))
    except OSError as err:
        if not disk_full(err):
            raise
        # every writer wrote to a temporary name: the previous outputs are as they were
        where = f" writing {err.filename}" if err.filename else ""
        _fail(f"no space left on the device{where}; the previous outputs are unchanged. Free some space and rerun")


def write_metrics(path: str | Path, summary: dict, images: int | None = None) -> None:
    """The stage's metrics JSON: ``summary`` and, under ``cost``, what the stage cost so far
    (``images``: how many went through a network, for images/s)."""
    write_json(path, {**summary, "cost": cost.measure(images)})


def named_path(text: str) -> tuple[str, Path]:
    """argparse type of ``NAME=PATH`` options such as ``--source cluster=artifacts/...``."""
    name, sep, path = text.partition("=")
    if not (sep and name and path):
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def unique_named_paths(pairs: list[tuple[str, Path]], option: str) -> dict[str, Path]:
    names = [name for name, _ in pairs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise UserError(f"{option} name {duplicate!r} is given more than once")
    return dict(pairs)


def require_files(*paths: Path) -> None:
    """Fail before anything is written when an input file is missing."""
    for path in paths:
        if not Path(path).is_file():
            raise DataError(f"{path}: not found; run the stage that writes it")
