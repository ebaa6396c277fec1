"""``python -m imageclust COMMAND``: the commands beside the DVC stages."""

from __future__ import annotations

import importlib
import sys

# command -> (module with main(argv) -> exit code, what it does)
COMMANDS = {
    "predict": ("imageclust.predict", "sort new images into the last run's clusters"),
    "export": ("imageclust.export", "another run's assignments table, by revision or registered model"),
    "compare": ("imageclust.compare", "chosen DVC experiments side by side: table, CSV and bar chart"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        usage = "\n".join(f"  {name:10s}{what}" for name, (_, what) in COMMANDS.items())
        print(f"usage: python -m imageclust COMMAND [options]\ncommands:\n{usage}", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[argv[0]][0]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
