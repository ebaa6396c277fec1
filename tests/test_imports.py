"""The code each stage runs, as DVC sees it: every module a stage imports is among its deps, so a
cached result is never served from code that has changed; the package's imports run one way."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from imageclust.imports import REPO, as_dvc_deps, closure, import_graph, module_path, stage_modules

STAGES = sorted(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
MAX_MODULE_LINES = 350


def code_deps(stage: str) -> list[str]:
    deps = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["deps"]
    return sorted(d for d in deps if d.startswith(("imageclust", "stages")))


def test_every_stage_has_a_script():
    assert STAGES == sorted(p.stem for p in (REPO / "stages").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_yaml_lists_exactly_the_modules_each_stage_imports(stage):
    wanted = as_dvc_deps(stage_modules(stage))
    assert code_deps(stage) == wanted, (
        f"dvc.yaml's code deps of {stage} are stale; `python -m imageclust.imports {stage}` prints them"
    )


def test_the_closure_follows_imports_inside_functions_and_parent_packages(tmp_path):
    files = {p.relative_to(REPO).as_posix() for p in stage_modules("finetune")}
    # finetune/stage.py -> finetune/registry.py -> scan.py -> clustering/kmeans.py: three steps down
    assert "imageclust/clustering/kmeans.py" in files
    assert "imageclust/clustering/__init__.py" in files  # a parent package runs first
    assert "imageclust/tables.py" in files and "imageclust/io.py" in files and "imageclust/cli.py" in files
    assert "imageclust/plots/stage.py" not in files  # and nothing it does not import


def test_a_folder_dep_is_used_only_when_the_stage_runs_all_of_it():
    for stage in STAGES:
        files = set(stage_modules(stage))
        for dep in code_deps(stage):
            path = REPO / dep
            if path.is_dir():
                assert set(path.rglob("*.py")) <= files, f"{stage}: {dep} holds modules the stage never imports"


def test_no_import_circle_in_the_package():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for other in sorted(graph.get(name, ())):
            if other == name or other not in graph:
                continue
            if state.get(other) == 1:
                circle = path[path.index(other) :] + [other] if other in path else [name, other]
                pytest.fail("import circle: " + " -> ".join(circle))
            if other not in state:
                visit(other, path + [other])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_module_is_a_hub():
    long = {
        p.relative_to(REPO).as_posix(): n
        for p in (REPO / "imageclust").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_package_init_files_only_re_export():
    for init in (REPO / "imageclust").rglob("__init__.py"):
        tree = __import__("ast").parse(init.read_text())
        kinds = {type(node).__name__ for node in tree.body}
        assert kinds <= {"Expr", "Import", "ImportFrom", "Assign"}, f"{init}: holds {kinds}"


def test_module_path_finds_packages_and_modules():
    assert module_path("imageclust.clustering") == REPO / "imageclust/clustering/__init__.py"
    assert module_path("imageclust.clustering.kmeans") == REPO / "imageclust/clustering/kmeans.py"
    assert module_path("numpy") is None
    assert REPO / "stages/cluster.py" in closure("stages.cluster")


@pytest.mark.slow
def test_editing_any_module_a_stage_imports_makes_dvc_report_that_stage(tmp_path):
    """In a clone with this commit's dvc.lock: touch one module, and `dvc status` names every stage
    that imports it, and no other."""
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs the git repository")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    for path in ("dvc.yaml", "dvc.lock", "params.yaml", ".dvcignore"):  # this working tree's, committed or not
        shutil.copy(REPO / path, clone / path)
    for package in ("imageclust", "stages"):
        shutil.rmtree(clone / package)
        shutil.copytree(REPO / package, clone / package, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}

    def changed_code() -> set[tuple[str, str]]:
        """(stage, code dep) for each code dep `dvc status` reports changed: the data deps are missing in
        a fresh clone, so every stage is reported for those."""
        out = subprocess.run(
            [sys.executable, "-m", "dvc", "status", "--json"],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return {
            (stage, dep)
            for stage, changes in json.loads(out or "{}").items()
            for change in changes
            if isinstance(change, dict)
            for dep in change.get("changed deps", {})
            if dep.startswith(("imageclust", "stages"))
        }

    assert changed_code() == set()  # this working tree's dvc.lock matches its code
    for module in ("imageclust/tables.py", "imageclust/clustering/graph.py", "imageclust/io.py"):
        target = clone / module
        original = target.read_text()
        target.write_text(original + "\n# edited\n")
        importers = {s for s in STAGES if REPO / module in stage_modules(s)}
        assert importers, module
        assert {stage for stage, _ in changed_code()} == importers, module
        target.write_text(original)
    # the bytecode Python writes beside the modules it imports (unless told not to) changes no stage
    for package in ("imageclust/finetune", "imageclust/data"):
        (clone / package / "__pycache__").mkdir(exist_ok=True)
        (clone / package / "__pycache__" / "stage.cpython-312.pyc").write_bytes(b"bytecode")
    assert changed_code() == set()
