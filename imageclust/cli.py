"""What every stage script shares: argument parsing, logging and turning user errors into one line."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, Sequence

from .errors import UserError

EXIT_USER_ERROR = 2


def run_stage(main: Callable[[argparse.Namespace], None], parser: argparse.ArgumentParser,
              argv: Sequence[str] | None = None) -> None:
    """Parse arguments, run ``main`` and exit 2 with a one-line message on a ``UserError``."""
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        main(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
