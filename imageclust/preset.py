"""Named params presets: ``presets/<name>.yaml`` holds the keys a recipe changes, nested as in
params.yaml. ``python -m imageclust.preset NAME [--dry-run] [dvc exp run options]`` runs them as one
``dvc exp run``; options after the name go to it, and its ``-S`` overrides come after the preset's, so
they win (``-S data.name=fashion_mnist``, ``-n my-run``, ``--queue``).

A preset starts from the committed ``params.yaml`` (``git show HEAD:params.yaml``), not from what an
earlier ``dvc exp run`` left in the workspace: otherwise a key one recipe set and the next does not
(``extract.backbone``) would carry over silently. The keys it resets are named on one line.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from .errors import ParamsError
from .io import atomic_path

PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"


def available() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are values."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def load_preset(name: str) -> dict[str, object]:
    """The preset's overrides as dotted keys."""
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ParamsError(f"unknown preset {name!r}; available: {', '.join(available()) or 'none'}")
    tree = yaml.safe_load(path.read_text()) or {}
    if not isinstance(tree, dict):
        raise ParamsError(f"{path}: a preset is a mapping of params sections")
    return flatten(tree)


def set_args(overrides: dict[str, object]) -> list[str]:
    """``-S key=value`` arguments for ``dvc exp run``, values written as YAML (lists, null)."""
    args = []
    for key, value in overrides.items():
        text = yaml.safe_dump(value, default_flow_style=True).strip()
        text = text.removesuffix("...").strip()  # safe_dump ends scalars with a document end marker
        args += ["-S", f"{key}={text}"]
    return args


def committed_params(params: Path = Path("params.yaml")) -> str:
    """The text of ``params.yaml`` in git's HEAD, where the preset starts from."""
    result = subprocess.run(["git", "show", f"HEAD:./{params.name}"], cwd=params.parent, capture_output=True, text=True)
    if result.returncode != 0:
        why = result.stderr.strip() or "no HEAD"
        raise ParamsError(f"{params}: not committed in git ({why}); presets start from it: commit it first")
    return result.stdout


def leftover_keys(workspace: dict, committed: dict, overrides: dict[str, object]) -> dict[str, tuple]:
    """Keys whose workspace value differs from the committed one and that the preset does not set:
    {key: (workspace value, committed value)}; absent keys read as None."""
    now, base = flatten(workspace), flatten(committed)
    return {
        key: (now.get(key), base.get(key))
        for key in sorted(set(now) | set(base))
        if now.get(key) != base.get(key) and key not in overrides
    }


def start_from_committed(
    name: str, overrides: dict[str, object], params: Path = Path("params.yaml"), dry_run: bool = False
) -> list[str]:
    """Restore the committed params.yaml (comments included) before the preset's -S; returns the reset keys."""
    text = committed_params(params)
    workspace = yaml.safe_load(params.read_text()) if params.is_file() else {}
    reset = leftover_keys(workspace or {}, yaml.safe_load(text) or {}, overrides)
    if reset:
        shown = ", ".join(f"{key} ({now!r} -> {base!r})" for key, (now, base) in reset.items())
        verb = "would reset" if dry_run else "resets"
        print(
            f"preset {name} {verb} to the committed params.yaml: {shown}; keep one with -S KEY=VALUE",
            file=sys.stderr,
        )
    if not dry_run and (not params.is_file() or params.read_text() != text):
        with atomic_path(params) as tmp:
            tmp.write_text(text)
    return list(reset)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m imageclust.preset", description=__doc__.splitlines()[0])
    parser.add_argument("name", help=f"one of: {', '.join(available())}")
    parser.add_argument("--dry-run", action="store_true", help="print the dvc command instead of running it")
    args, dvc_args = parser.parse_known_args(argv)
    try:
        overrides = load_preset(args.name)
        start_from_committed(args.name, overrides, dry_run=args.dry_run)
    except ParamsError as err:
        sys.exit(f"error: {err}")
    cmd = ["dvc", "exp", "run", *set_args(overrides), *dvc_args]
    if args.dry_run:
        print(shlex.join(cmd))
        return
    sys.exit(subprocess.call(cmd))


if __name__ == "__main__":
    main()
