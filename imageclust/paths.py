"""Where the pipeline keeps its artifacts, named once: the ``paths`` variables of ``dvc.yaml``,
which its stages' commands, deps and outs use. Code outside the DAG (``predict``, ``export`` by
hand, the benchmarks) reads them here, for the project folder it is pointed at."""

from __future__ import annotations

from pathlib import Path

import yaml

from .errors import DataError


def artifact_paths(project: str | Path = ".") -> dict[str, Path]:
    """``{name: path}`` of ``project``'s ``dvc.yaml`` (``vars: - paths: ...``), under ``project``."""
    dvc_yaml = Path(project) / "dvc.yaml"
    if not dvc_yaml.is_file():
        raise DataError(f"{dvc_yaml}: not found; is {project} the pipeline's folder?")
    for entry in yaml.safe_load(dvc_yaml.read_text()).get("vars") or []:
        if isinstance(entry, dict) and isinstance(entry.get("paths"), dict):
            return {name: Path(project) / path for name, path in entry["paths"].items()}
    raise DataError(f"{dvc_yaml}: no `paths` under `vars`")
