"""The model that sorts new images, as one folder: what ``predict`` reads of a run, with where it
came from.

The export stage writes it (``artifacts/model``), ``dvc.yaml``'s ``artifacts:`` registers it
as ``image-clusterer`` (type ``model``), ``dvc artifacts get`` hands it over, and
``predict --model FOLDER`` uses it anywhere; ``predict --rev REV`` fetches it from any git commit,
tag or DVC experiment of the project. Its ``bundle.json`` names the dataset, method, backbone and K,
and holds the params that made it, which ``params_differences`` compares with a ``dvc.lock``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from .clustering.stage import MODEL_FILE as CLUSTER_MODEL_FILE
from .data.prepared import META_FILE
from .errors import DataError
from .finetune.stage import ASSIGNMENTS_FILE, ENCODER_FILE, MODEL_FILE
from .io import atomic_dir, load_torch, read_json, write_json
from .paths import artifact_paths
from .preset import flatten
from .tables import FEATURES_META, read_assignments

MANIFEST = "bundle.json"
PARAMS_FILE = "params.yaml"
# the params sections whose keys made the models; compared with the stages of dvc.lock that made them
SECTIONS = ("seed", "data", "pretrain", "extract", "cluster", "finetune")
MODEL_STAGES = ("pretrain", "extract", "extract_spaces", "cluster", "finetune")


def bundle_paths(root: str | Path) -> dict[str, Path]:
    """Where a bundle keeps what ``predict`` reads, under the names of ``paths.artifact_paths``."""
    root = Path(root)
    names = ("prepared", "features", "spaces", "cluster", "finetune")
    return {**{name: root / name for name in names}, "encoder": root / "encoder.pt"}


def lock_params(lock_path: str | Path) -> dict:
    """The params.yaml values that a ``dvc.lock`` records for the stages that make the models, flattened."""
    lock = yaml.safe_load(Path(lock_path).read_text()) or {}
    recorded = {}
    for stage in MODEL_STAGES:
        params = ((lock.get("stages") or {}).get(stage) or {}).get("params") or {}
        recorded.update(flatten(params.get(PARAMS_FILE) or {}))
    return recorded


def params_differences(made_with: dict, lock_path: str | Path) -> list[str]:
    """``key: made_with value -> the lock's value`` for each key the lock records and ``made_with`` (flat)
    sets otherwise; empty when they agree."""
    recorded = lock_params(lock_path)
    return [
        f"{key}: {made_with[key]!r} -> {value!r}"
        for key, value in sorted(recorded.items())
        if key in made_with and made_with[key] != value
    ]


def write_bundle(out_dir: str | Path, paths: dict[str, Path], params_path: str | Path) -> dict:
    """Copy what ``predict`` reads of the run under ``paths`` (``artifact_paths``'s names) into a fresh
    ``out_dir``, with ``params_path`` and a manifest; returns the manifest."""
    model = load_torch(paths["finetune"] / MODEL_FILE)
    files = [
        ("prepared", META_FILE),
        ("features", FEATURES_META),
        ("cluster", CLUSTER_MODEL_FILE),
        ("finetune", MODEL_FILE),
        ("finetune", ASSIGNMENTS_FILE),  # the classes its clusters were matched to
        ("finetune", ENCODER_FILE),  # the methods that train the encoder
        *(("spaces", f"{name}/{FEATURES_META}") for name in model.get("spaces", [])),
    ]
    features = read_json(paths["features"] / FEATURES_META)
    manifest = {
        "dataset": read_json(paths["prepared"] / META_FILE).get("name"),
        "method": model.get("method"),
        "backbone": features.get("backbone"),
        "k": read_assignments(paths["finetune"] / ASSIGNMENTS_FILE).num_clusters,
        "params": params_sections(params_path),
    }
    with atomic_dir(out_dir) as tmp:
        target = bundle_paths(tmp)
        for name, file in files:
            source = paths[name] / file
            if source.is_file():
                (target[name] / file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target[name] / file)
            elif name != "finetune" or file == MODEL_FILE:
                raise DataError(f"{source}: not found; run `dvc repro` first")
        if paths["encoder"].is_file():  # a trained encoder (or the placeholder of a frozen backbone)
            shutil.copy2(paths["encoder"], target["encoder"])
        shutil.copy2(params_path, tmp / PARAMS_FILE)
        write_json(tmp / MANIFEST, manifest)
    return manifest


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise DataError(f"{folder}: not a model folder ({MANIFEST} not found); get one with `dvc artifacts get`")
    return read_json(path)


def fetch_at_rev(project: str | Path, rev: str, path: Path, into: Path, what: str) -> Path:
    """``path`` (relative to ``project``) as of git revision or DVC experiment ``rev``, copied from git
    and DVC's cache into ``into``; ``what`` names the option in errors."""
    from dvc.api import DVCFileSystem
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.scm import resolve_rev

    try:
        with Repo(str(project)) as repo:
            commit = resolve_rev(repo.scm, rev)  # a git revision, or a DVC experiment's name
    except DvcException as err:
        raise DataError(f"{what}: {rev!r} is not a git revision or DVC experiment of {project} ({err})") from None
    fs = DVCFileSystem(str(project), rev=commit)
    if not fs.exists(path.as_posix()):
        raise DataError(f"{what}: revision {rev} has no {path.as_posix()}; was its pipeline run by this version?")
    fs.get(path.as_posix(), str(into), recursive=True)
    return into


def registered(project: str | Path, spec: str) -> tuple[str, Path]:
    """``(commit, path)`` of a model in DVC's registry: ``NAME`` (its latest version), ``NAME@vX.Y.Z``
    or ``NAME#STAGE``, as GTO's git tags register them."""
    import dvc.api
    from dvc.exceptions import DvcException

    name, _, version = spec.partition("@")
    name, _, stage = name.partition("#")
    try:
        found = dvc.api.artifacts_show(name, version=version or None, stage=stage or None, repo=str(project))
    except DvcException as err:
        raise DataError(f"--model {spec}: not a model folder, nor a model registered in {project} ({err})") from None
    return found["rev"], Path(found["path"])


def provenance(source: str, made_with: dict, lock_path: str | Path, manifest: dict | None = None) -> str:
    """One line saying which models are used and whether the params that made them (``made_with``,
    flat) are those the workspace's ``dvc.lock`` records."""
    what = ""
    if manifest:
        what = " (" + ", ".join(f"{key} {manifest.get(key)}" for key in ("dataset", "method", "backbone", "k")) + ")"
    if not Path(lock_path).is_file():
        return f"models of {source}{what}; no {lock_path} to compare their params with"
    differences = params_differences(made_with, lock_path)
    if not differences:
        return f"models of {source}{what}; the params that made them match {lock_path}"
    shown = "; ".join(differences[:5]) + (f"; and {len(differences) - 5} more" if len(differences) > 5 else "")
    return f"models of {source}{what}; made with params that differ from {lock_path}: {shown}"


def params_sections(params_path: str | Path) -> dict:
    """The flat params of ``SECTIONS`` in a params file."""
    params = yaml.safe_load(Path(params_path).read_text()) or {}
    return flatten({key: params[key] for key in SECTIONS if key in params})


def model_source(
    project: Path, rev: str | None, model: Path | None, params: Path | None, scratch: Path
) -> tuple[Path | None, str]:
    """The model folder that ``rev`` (fetched into ``scratch``) or ``model`` name, or None for the
    workspace's run; and a line saying which models those are and whether the params that made them
    are those of the workspace's ``dvc.lock``."""
    lock = project / "dvc.lock"
    if rev is None and model is None:
        return None, provenance(f"the workspace {project}", params_sections(params or project / PARAMS_FILE), lock)
    folder, source = model, str(model)
    if rev is not None:
        model_path = artifact_paths(project)["model"].relative_to(project)
        folder, source = fetch_at_rev(project, rev, model_path, scratch / "model", "--rev"), f"--rev {rev}"
    elif not model.is_dir():  # a registered name
        commit, model_path = registered(project, str(model))
        folder = fetch_at_rev(project, commit, model_path, scratch / "model", f"--model {model}")
        source = f"--model {model} (commit {commit[:7]})"
    manifest = read_manifest(folder)
    return folder, provenance(source, manifest.get("params", {}), lock, manifest)
