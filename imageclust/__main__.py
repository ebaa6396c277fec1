"""``python -m imageclust COMMAND``: the commands beside the DVC stages."""

from __future__ import annotations

import sys

COMMANDS = {"predict": "sort new images into the last run's clusters"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        usage = "\n".join(f"  {name:10s}{what}" for name, what in COMMANDS.items())
        print(f"usage: python -m imageclust COMMAND [options]\ncommands:\n{usage}", file=sys.stderr)
        return 2
    from .predict import main as predict

    return predict(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
