"""Which of this repository's Python files a stage runs: the modules ``stages/<name>.py`` imports,
followed through the package, found by reading the code (every ``import``, at the top of a module
or inside a function), not by running it.

``dvc.yaml`` must list exactly these as the stage's code dependencies (``tests/test_imports.py``
checks it), and the stages that resume from a checkpoint fingerprint the same files, so that
neither DVC nor a resume ever serves a result made by code that has changed.
``python -m imageclust.imports [STAGE ...]`` prints each stage's list as ``dvc.yaml`` wants it.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("imageclust", "stages")  # the repository's own code; everything else is a library


def module_path(name: str) -> Path | None:
    """The file of module ``name`` in this repository (a package's ``__init__.py``), or None."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = REPO.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path) -> set[str]:
    """Names of the modules that ``path``'s import statements load."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            # `from pkg import sub` loads the submodule pkg.sub when there is one
            found.update(f"{base}.{alias.name}" for alias in node.names if module_path(f"{base}.{alias.name}"))
    return found


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` loads ``a``, ``a.b`` and ``a.b.c``: each package's ``__init__`` runs first."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def import_graph() -> dict[str, set[str]]:
    """Every module of the repository's packages -> the repository modules its statements import."""
    graph = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            graph[module_name(path)] = {m for m in _imported(path) if module_path(m) is not None}
    return graph


@cache
def closure(entry: str) -> tuple[Path, ...]:
    """The files that running module ``entry`` loads from this repository, sorted."""
    graph = import_graph()
    seen: set[str] = set()
    todo = list(_with_parents(entry))
    while todo:
        name = todo.pop()
        if name in seen or module_path(name) is None:
            continue
        seen.add(name)
        for imported in graph.get(name, ()):
            todo.extend(_with_parents(imported))
    return tuple(sorted(module_path(name) for name in seen))


def stage_modules(stage: str) -> tuple[Path, ...]:
    """The code of ``python -m stages.<stage>``."""
    return closure(f"stages.{stage}")


def as_dvc_deps(files: tuple[Path, ...]) -> list[str]:
    """``files`` as dvc.yaml deps: a folder where the stage runs every Python file in it, else files."""
    wanted = set(files)
    deps: list[str] = []
    covered: set[Path] = set()
    folders = sorted({f.parent for f in files}, key=lambda d: len(d.parts))
    for folder in folders:
        if any(folder.is_relative_to(d) for d in map(REPO.joinpath, deps)):
            continue
        inside = set(folder.rglob("*.py"))
        if folder != REPO and folder != REPO / "imageclust" and inside <= wanted:
            deps.append(str(folder.relative_to(REPO)))
            covered |= inside
    deps += [str(f.relative_to(REPO)) for f in sorted(wanted - covered)]
    return sorted(deps)


def main(argv: list[str] | None = None) -> int:
    stages = argv if argv else sorted(p.stem for p in (REPO / "stages").glob("*.py") if p.stem != "__init__")
    for stage in stages:
        print(f"{stage}:")
        print("\n".join(f"  - {dep}" for dep in as_dvc_deps(stage_modules(stage))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
