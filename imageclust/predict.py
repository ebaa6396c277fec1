"""Sort new images into the clusters of the last run.

``python -m imageclust predict IMAGES_OR_FOLDERS... [--out predictions.csv] [--sort-into DIR [--link]]
[--rev REV | --model FOLDER]``: the workspace's models, those of a git revision or DVC experiment, or
a model folder that ``dvc artifacts get PROJECT image-clusterer`` fetched.

Each image goes the way the pipeline's images went: decoded and converted as the download stage
converts (the prepared size and channels), embedded by the extract stage's backbone with its
preprocessing, then assigned by the finetune stage's saved model (through the trained encoder
for the methods that train it), or by the cluster stage's transform and rule when
``finetune.method`` is ``none``. The CSV has, per image: ``path``, ``cluster``, ``confidence``,
``distance`` (to the cluster's centre, in the space the assignment is made in), ``matched_class``
(the class the run matched that cluster to, when its data had labels), the cluster stage's
``cluster_stage_cluster``, and ``error`` for an image that could not be read (counted, not fatal).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from .bundle import PARAMS_FILE, bundle_paths, model_source
from .cli import EXIT_USER_ERROR
from .clustering.base import distances_to_centres
from .clustering.stage import MODEL_FILE as CLUSTER_MODEL_FILE
from .clustering.stage import load_cluster_model
from .config import load_params
from .data.images import SkipSample, is_image_file, open_image, to_canonical
from .data.params import DataParams
from .data.prepared import META_FILE
from .errors import DataError, UserError
from .features.embedder import Embedder
from .features.engines import ANY_COSINE, default_cache_dir
from .features.params import ExtractParams
from .features.registry import EXTRACTORS
from .finetune.registry import METHODS
from .finetune.stage import ASSIGNMENTS_FILE, ENCODER_FILE, MODEL_FILE
from .io import load_torch, read_json
from .metrics import hungarian_match
from .models.encoder import load_encoder
from .paths import artifact_paths
from .predictions import Predictions, check_new_folder, read_cluster_names, sort_into, write_csv
from .runtime import resolve_device, to_float_images
from .tables import FEATURES_META as FEATURES_META_FILE
from .tables import UNLABELED, read_assignments

log = logging.getLogger("predict")


def image_paths(inputs: list[Path]) -> list[Path]:
    """The image files named, and those under the folders named (recursively, sorted)."""
    paths = []
    for item in inputs:
        if item.is_dir():
            paths += sorted(p for p in item.rglob("*") if p.is_file() and is_image_file(p))
        elif item.is_file():
            paths.append(item)
        else:
            raise DataError(f"{item}: no such file or folder")
    if not paths:
        raise DataError(f"no image files in {', '.join(map(str, inputs))}")
    return paths


class Predictor:
    """Everything the last run saved to assign new images, loaded once; ``predict(paths)`` in batches."""

    def __init__(
        self,
        project: Path = Path("."),
        params_path: Path | None = None,
        batch_size: int = 64,
        paths: dict[str, Path] | None = None,
    ):
        # the run in ``project`` (its dvc.yaml names where its artifacts are), or the artifacts at ``paths``
        self.project, self.batch_size = Path(project), batch_size
        gparams, self.data_params, extract = load_params(
            DataParams, ExtractParams, path=params_path or self.project / "params.yaml"
        )
        paths = paths or artifact_paths(self.project)
        self.finetune_dir = paths["finetune"]
        prepared_meta, features_meta = paths["prepared"] / META_FILE, paths["features"] / FEATURES_META_FILE
        for needed in (
            prepared_meta,
            features_meta,
            paths["cluster"] / CLUSTER_MODEL_FILE,
            self.finetune_dir / MODEL_FILE,
        ):
            if not needed.is_file():
                raise DataError(f"{needed}: not found; run `dvc repro` first")
        meta = read_json(prepared_meta)
        self.shape = (int(meta["height"]), int(meta["width"]), int(meta["channels"]))
        features = read_json(features_meta)
        if features.get("backbone") != extract.backbone:
            raise DataError(
                f"params: extract.backbone={extract.backbone!r} but {features_meta} was made with "
                f"{features.get('backbone')!r}; run `dvc repro` so the artifacts match params.yaml"
            )
        self.device = resolve_device(gparams.device)
        self.embedder = self._embedder(extract, features, paths["encoder"])
        self.transform, self.clustering = load_cluster_model(paths["cluster"])
        self.model = load_torch(self.finetune_dir / MODEL_FILE)
        method = METHODS.get(self.model.get("method"))
        self.assign = method.assign if method is not None else None
        if self.model.get("kept_cluster_stage"):  # its guard kept the cluster stage's assignment
            self.assign = None
        if method is None or (method.assign is not None and "trains_encoder" not in self.model):
            raise DataError(
                f"{self.finetune_dir / MODEL_FILE}: finetune.method={self.model.get('method')!r} saved "
                "no model that assigns new images (written by an older version?); rerun the finetune "
                "stage"
            )
        # TURTLE fitted on extract.spaces too: new images are embedded in each of them
        self.space_embedders = [
            self._space_embedder(extract, paths["spaces"], name) for name in self.model.get("spaces", [])
        ]
        self.encoder = None
        if self.model.get("trains_encoder"):
            self.encoder, header = load_encoder(self.finetune_dir / ENCODER_FILE)
            self.encoder, self.encoder_side = self.encoder.to(self.device), header.get("input_side")
        self.matched = self._matched_classes(meta["classes"])

    @classmethod
    def from_model(cls, folder: Path, batch_size: int = 64) -> Predictor:
        """The model folder the export stage writes (``dvc artifacts get`` fetches it; ``model_source``
        has read its manifest)."""
        return cls(folder, folder / PARAMS_FILE, batch_size, paths=bundle_paths(folder))

    def _embedder(self, extract, features_meta: dict, encoder_path: Path) -> Embedder:
        """Extract's backbone behind its preprocessing, on the engine the stage ran (its graphs reused
        from the engine cache, made for its batch size)."""
        backbone = EXTRACTORS[extract.backbone].build(extract.block, encoder_path)
        embedder = Embedder.for_extract(backbone, self.shape, extract, self.device)
        batch = extract.batch_size or (256 if self.device.type == "cuda" else 32)
        embedder.use_engine(
            torch.zeros((batch, *self.shape), dtype=torch.uint8),
            features_meta.get("engine", "torch"),
            features_meta.get("precision", "fp32"),
            default_cache_dir(),
            total_rows=batch,
            min_cosine=ANY_COSINE,  # what the stage ran, as it ran it: its guard judged the run's data
            calibration=features_meta.get("calibration"),
        )
        return embedder

    def _space_embedder(self, extract, spaces_dir: Path, name: str) -> Embedder:
        space = next((s for s in extract.spaces if s.label == name), None)
        meta_path = spaces_dir / name / FEATURES_META_FILE
        meta = read_json(meta_path) if meta_path.is_file() else {}
        if space is None or meta.get("backbone") != space.backbone:
            raise DataError(
                f"{self.finetune_dir / MODEL_FILE} was fitted on the space {name!r}, which params.yaml's "
                f"extract.spaces and {spaces_dir} do not both hold; run `dvc repro`"
            )
        return self._embedder(extract.for_space(space), meta, Path())

    def _matched_classes(self, classes: list[str]) -> dict[int, str]:
        """Cluster -> class as the run matched them (one to one), when its samples had labels."""
        path = self.finetune_dir / ASSIGNMENTS_FILE
        if not path.is_file() or not classes:
            return {}
        a = read_assignments(path)
        labelled = a.labels != UNLABELED
        if not labelled.any():
            return {}
        return {c: classes[k] for c, k in hungarian_match(a.labels[labelled], a.clusters[labelled]).items()}

    def read(self, path: Path) -> np.ndarray:
        """The image as the download stage would have prepared it; ``SkipSample`` if it cannot be."""
        height, width, channels = self.shape
        try:
            with open_image(path, self.data_params.max_image_pixels) as image:
                image.load()
                if height == width:
                    return to_canonical(image, height, channels)
                return to_canonical(image.resize((width, height)), None, channels)
        except SkipSample:
            raise
        except (OSError, ValueError, SyntaxError) as err:  # truncated or corrupt past the header
            raise SkipSample(f"unreadable ({type(err).__name__})") from None

    @torch.no_grad()
    def _assign(self, pixels: np.ndarray) -> tuple[np.ndarray, ...]:
        vectors = self.embedder(torch.from_numpy(pixels)).cpu().numpy()
        x = self.transform.apply(vectors)
        stage_clusters, stage_confidence = self.clustering.predict(x)
        if self.assign is None:  # finetune.method: none, or a guard that kept the cluster stage's
            return (
                stage_clusters,
                stage_confidence,
                distances_to_centres(x, self.clustering.centroids, stage_clusters),
                stage_clusters,
            )
        if self.encoder is not None:
            self.encoder.eval()
            vectors = self.encoder(to_float_images(pixels, self.device, self.encoder_side)).float().cpu().numpy()
        if self.space_embedders:
            vectors = [vectors, *(embed(torch.from_numpy(pixels)).cpu().numpy() for embed in self.space_embedders)]
        clusters, confidence, distance = self.assign(self.model, vectors)
        return clusters, confidence, distance, stage_clusters

    def predict(self, paths: list[Path]) -> Predictions:
        n = len(paths)
        out = Predictions(
            paths,
            np.full(n, -1, np.int64),
            np.full(n, np.nan, np.float32),
            np.full(n, np.nan, np.float32),
            np.full(n, -1, np.int64),
            matched=self.matched,
        )
        for start in range(0, n, self.batch_size):
            batch, positions = [], []
            for i in range(start, min(n, start + self.batch_size)):
                try:
                    batch.append(self.read(paths[i]))
                    positions.append(i)
                except SkipSample as skip:
                    out.errors[i] = str(skip)
                    log.warning("%s: skipped, %s", paths[i], skip)
            if batch:
                clusters, confidence, distance, stage = self._assign(np.stack(batch))
                out.clusters[positions], out.confidence[positions] = clusters, confidence
                out.distance[positions], out.stage_clusters[positions] = distance, stage
        return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m imageclust predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("images", type=Path, nargs="+", help="image files and folders (searched recursively)")
    parser.add_argument("--out", type=Path, default=Path("predictions.csv"), help="CSV to write (default: %(default)s)")
    parser.add_argument("--sort-into", type=Path, help="new folder with one sub-folder of images per cluster")
    parser.add_argument("--link", action="store_true", help="with --sort-into: symbolic links instead of copies")
    parser.add_argument("--names", type=Path, help="CSV of `cluster,name`: your names for the clusters (folders, CSV)")
    parser.add_argument("--project", type=Path, default=Path("."), help="the pipeline's folder (default: here)")
    parser.add_argument("--params", type=Path, help="params file (default: the project's params.yaml)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--rev", help="the models of this git commit, tag or DVC experiment of the project (default: the workspace's)"
    )
    source.add_argument(
        "--model", type=Path, help="a model folder, as `dvc artifacts get PROJECT image-clusterer -o FOLDER` fetches"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    return parser


def load_predictor(args: argparse.Namespace, scratch: Path) -> Predictor:
    folder, line = model_source(args.project, args.rev, args.model, args.params, scratch)
    if folder is None:
        predictor = Predictor(args.project, args.params, args.batch_size)
    else:
        predictor = Predictor.from_model(folder, args.batch_size)
    log.info(line)  # which models, and whether the params that made them are the workspace's dvc.lock's
    return predictor


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        if args.batch_size < 1:
            raise UserError(f"--batch-size={args.batch_size}: must be at least 1")
        if args.link and args.sort_into is None:
            raise UserError("--link needs --sort-into")
        if args.sort_into is not None:
            check_new_folder(args.sort_into)  # before the work, not after it
        names = read_cluster_names(args.names) if args.names is not None else {}
        paths = image_paths(args.images)
        with tempfile.TemporaryDirectory(prefix="imageclust-model-") as scratch:
            predictions = load_predictor(args, Path(scratch)).predict(paths)
        predictions.names = names
        if len(predictions.errors) == len(paths):
            raise DataError(f"none of the {len(paths)} images could be read")
        write_csv(args.out, predictions)
        if args.sort_into is not None:
            sort_into(args.sort_into, predictions, args.link)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    failed, also = len(predictions.errors), f" and {args.sort_into}/" if args.sort_into else ""
    log.info("%d images assigned, %d could not be read; wrote %s%s", len(paths) - failed, failed, args.out, also)
    return 0
