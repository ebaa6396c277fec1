"""Feature extraction: one vector per prepared sample, written shard by shard into parquet.

Extractors by name (registry ``EXTRACTORS``): the pretrain stage's ``encoder``, raw ``pixels``, and
every frozen pretrained backbone of ``imageclust.models.pretrained``. Each is a ``FrozenBackbone``
whose preprocessing (channels, size, normalisation) runs batched on the device.

At scale: a loader reads contiguous rows of ``images.npy`` in worker processes while the model runs;
each shard is streamed to disk batch by batch (memory holds one batch, whatever the dataset's size);
finished shards survive a kill in the work folder and are skipped on the next run; under
``torchrun`` each process extracts every ``world_size``-th shard, and the first publishes them all.
"""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data import load_prepared
from ..data.prepared import IMAGES_FILE, META_FILE, SAMPLES_FILE, ImageRows
from ..errors import DataError
from ..io import digest_files, fingerprint, load_torch
from ..models import BACKBONES, build_backbone
from ..models.pretrained import PRETRAINED, FrozenBackbone
from ..runtime import autocast, init_distributed, resolve_device
from ..tables import FeatureShardWriter
from .preprocess import Preprocess, input_side
from .shards import Shard, WorkFolder, assigned, plan_shards

log = logging.getLogger(__name__)


def load_encoder(path: str | Path) -> tuple[nn.Module, dict]:
    """The backbone the pretrain stage saved, in eval mode on the CPU, and the file's header."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: encoder not found; run the pretrain stage")
    state = load_torch(path)
    if state.get("skipped"):
        raise DataError(f"{path}: pretraining was skipped ({state['skipped']}); rerun the pretrain stage "
                        "with extract.backbone=encoder")
    if state.get("backbone") not in BACKBONES:
        raise DataError(f"{path}: unknown backbone {state.get('backbone')!r}")
    model = build_backbone(state["backbone"], state["in_channels"], state.get("image_size", 32),
                           **state.get("options", {}))
    model.load_state_dict(state.pop("state_dict"))
    return model.eval(), state


def encoder_backbone(params, encoder_path) -> FrozenBackbone:
    """The backbone trained by the pretrain stage; it normalises its [0, 1] input itself."""
    model, header = load_encoder(encoder_path)
    return FrozenBackbone(model=model, output_dim=int(header["output_dim"]), input_size=None,
                          channels=int(header["in_channels"]), info={"model": header["backbone"]})


def pixel_backbone(params, encoder_path) -> FrozenBackbone:
    """Raw pixels in [0, 1], flattened channel-first: the baseline every learned feature must beat."""
    return FrozenBackbone(model=nn.Flatten(), output_dim=-1, input_size=None, channels=None)


def _pretrained(name: str) -> Callable[..., FrozenBackbone]:
    def build(params, encoder_path) -> FrozenBackbone:
        return PRETRAINED[name](getattr(params, name))

    build.__doc__ = PRETRAINED[name].__doc__
    return build


EXTRACTORS: dict[str, Callable[..., FrozenBackbone]] = {
    "encoder": encoder_backbone,
    "pixels": pixel_backbone,
    **{name: _pretrained(name) for name in PRETRAINED},
}


class Embedder:
    """A frozen backbone behind its preprocessing, on a device: uint8 (n, h, w, c) pixels -> float vectors.
    The extract stage and ``predict`` both embed through it, so new images get the same features."""

    def __init__(self, backbone: FrozenBackbone, in_channels: int, image_size: int | None, device: torch.device):
        self.backbone, self.device = backbone, device
        self.side = input_side(image_size, backbone.input_size, backbone.size_multiple)
        self.channels = backbone.channels or in_channels
        self.preprocess = Preprocess(in_channels, backbone.channels, self.side, backbone.mean, backbone.std).to(device)
        self.model = backbone.model.to(device).eval()
        # channels-last runs convolutions (depthwise ones above all) about twice as fast, on CPUs too
        self.channels_last = any(isinstance(m, nn.Conv2d) for m in self.model.modules())
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def output_dim(self, image_hw: tuple[int, int]) -> int:
        if self.backbone.output_dim > 0:
            return self.backbone.output_dim
        height, width = (self.side, self.side) if self.side else image_hw
        return self.channels * height * width  # pixels

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(pixels.to(self.device, non_blocking=True))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device):
            return self.model(x).float()


class _ShardBatches(Dataset):
    """Item i: (shard index, first row, last row, uint8 pixels) of the i-th batch of the given shards."""

    def __init__(self, images_path: Path, shards: list[Shard], batch_size: int):
        self.rows = ImageRows(images_path)
        self.items = [(s.index, start, min(s.stop, start + batch_size))
                      for s in shards for start in range(s.start, s.stop, batch_size)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        shard, start, stop = self.items[i]
        return shard, start, stop, torch.from_numpy(self.rows.read(start, stop))


def _loader(images_path: Path, shards: list[Shard], batch_size: int, workers: int, device) -> DataLoader:
    return DataLoader(_ShardBatches(images_path, shards, batch_size), batch_size=None, shuffle=False,
                      num_workers=workers, pin_memory=device.type == "cuda",
                      prefetch_factor=4 if workers else None, persistent_workers=False)


def _run_id(prepared_dir: Path, encoder_path, params, device, image_shape) -> str:
    """Shards resume only into the run they belong to: same params, data, encoder, code and device type."""
    package = Path(__file__).resolve().parents[1]
    code = digest_files([package / "features", package / "models", package / "runtime.py"], pattern="*.py")
    data = digest_files([prepared_dir / SAMPLES_FILE, prepared_dir / META_FILE])
    encoder = digest_files([encoder_path]) if params.backbone == "encoder" else None
    return fingerprint(params, code, data, encoder, device.type, list(image_shape))


def extract_features(prepared_dir, encoder_path, out_dir, work_dir, gparams, params) -> dict | None:
    """Extract ``params.backbone``'s features of every prepared sample into ``out_dir``.

    Returns the run's summary in the main process, None in the other ranks of a distributed run.
    """
    prepared_dir = Path(prepared_dir)
    data = load_prepared(prepared_dir)
    ddp = init_distributed()
    device = resolve_device(gparams.device, ddp.local_rank)
    backbone = EXTRACTORS[params.backbone](params, encoder_path)
    embedder = Embedder(backbone, int(data.meta["channels"]), params.image_size, device)
    side = embedder.side
    batch_size = params.batch_size or (256 if device.type == "cuda" else 32)  # big CPU batches thrash caches

    shards = plan_shards(len(data.ids), params.shard_rows)
    work = WorkFolder(work_dir, _run_id(prepared_dir, encoder_path, params, device, data.images.shape))
    if ddp.is_main:
        work.reset_if_stale()
    ddp.barrier()
    mine = assigned(shards, ddp.rank, ddp.world_size)
    todo = [s for s in mine if not work.is_done(s)]
    if len(todo) < len(mine):
        log.info("resuming: %d of %d shards already extracted", len(mine) - len(todo), len(mine))

    channels = embedder.channels
    dim = embedder.output_dim(data.images.shape[1:3])
    rows_done, started = 0, time.perf_counter()
    batches = _loader(prepared_dir / IMAGES_FILE, todo, batch_size, params.num_workers, device)
    with torch.inference_mode():
        for shard_index, items in itertools.groupby(batches, key=lambda item: item[0]):
            shard = shards[shard_index]
            with FeatureShardWriter(work.shard_path(shard), dim, params.dtype) as writer:
                for _, start, stop, pixels in items:
                    vectors = embedder(pixels)
                    _check_finite(vectors, start, data.ids, params.backbone)
                    writer.write(data.ids[start:stop], data.splits[start:stop], data.labels[start:stop],
                                 vectors.cpu().numpy())
            rows_done += shard.rows
            if ddp.is_main:
                rate = rows_done / (time.perf_counter() - started)
                left = sum(s.rows for s in todo) - rows_done
                log.info("shard %s done: %d/%d rows of this process, %.0f images/s, about %.0fs left",
                         shard.name, rows_done, rows_done + left, rate, left / rate)
    seconds = time.perf_counter() - started
    ddp.barrier()
    summary = None
    if ddp.is_main:
        meta = {"backbone": params.backbone, "dataset": data.meta["name"], "classes": data.classes,
                "input_size": side, "channels": channels, "mean": list(backbone.mean),
                "std": list(backbone.std), **{f"backbone_{k}": v for k, v in backbone.info.items()}}
        work.publish(shards, out_dir, meta, dim, params.dtype)
        summary = {"backbone": params.backbone, "rows": len(data.ids), "dim": int(dim), "dtype": params.dtype,
                   "input_size": side, "shards": len(shards), "shards_resumed": len(mine) - len(todo),
                   "seconds": round(seconds, 3), "world_size": ddp.world_size, "device": device.type,
                   "images_per_second": round(rows_done * ddp.world_size / seconds, 1) if rows_done else None}
        log.info("extracted %d x %d features in %.1fs", len(data.ids), dim, seconds)
    ddp.barrier()
    ddp.close()
    return summary


def _check_finite(vectors: torch.Tensor, start: int, ids, backbone: str) -> None:
    finite = torch.isfinite(vectors).all(1)
    if not finite.all():
        row = int(torch.nonzero(~finite)[0, 0]) + start
        raise DataError(f"extract.backbone={backbone!r} produced non-finite features for sample {ids[row]!r} "
                        f"(row {row})")
