"""The training loop every pretraining method shares: batches from the prepared pixels, batched
augmentation on the device, AdamW with warmup and cosine decay, DVCLive curves, and checkpoints
that let a killed run resume where it stopped (as DINO's ``restart_from_checkpoint``).

Randomness is drawn from generators seeded by (seed, epoch, rank), so a resumed run sees the same
batches and augmentations as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from ..augment import build_augmenter
from ..data.prepared import META_FILE, SAMPLES_FILE, load_prepared
from ..errors import DataError
from ..imports import stage_modules
from ..io import digest_files, fingerprint, load_torch, save_torch
from ..models.backbones import build_backbone
from ..models.encoder import backbone_options, save_encoder, training_side
from ..progress import progress
from ..runtime import (
    amp_dtype,
    autocast,
    check_finite_loss,
    init_distributed,
    resolve_device,
    seed_everything,
    to_float_images,
)
from .optim import build_optimizer
from .registry import METHODS

log = logging.getLogger(__name__)
CHECKPOINT_FILE = "last.pt"
LOGGED = ("loss", "lr", "temperature", "images_per_second")  # the DVCLive curves, one point per epoch


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, schedule: str = "cosine") -> float:
    """Learning-rate factor: linear warmup to 1, then cosine decay to 0 (``schedule="constant"``: stays 1)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def stop_early(losses: list[float], p) -> bool:
    """True once the last ``p.patience`` epochs have not lowered the best loss before them by more
    than ``p.min_delta``; never without a patience."""
    if p.patience is None or len(losses) <= p.patience:
        return False
    best_before = min(losses[: -p.patience])
    return min(losses[-p.patience :]) > best_before - p.min_delta


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The shuffled batches of one epoch; the last partial batch is dropped once there is a full one."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    if n >= batch_size:
        order = order[: n - n % batch_size]
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _open_live(live_dir: Path, history: list[dict]):
    from dvclive import Live

    live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False)
    for row in history:  # a resumed run re-logs what the killed one had logged
        for key in LOGGED:
            live.log_metric(key, row[key])
        live.next_step()
    return live


def pretrain(
    prepared_dir, encoder_path, checkpoint_dir, live_dir, gparams, train_splits: list[str], params
) -> dict | None:
    """Train ``params.method`` on the prepared training splits; write the backbone to ``encoder_path``.

    Returns the run's summary in the main process, None in the other ranks of a distributed run.
    """
    data = load_prepared(prepared_dir)
    indices = data.indices(train_splits)
    if len(indices) < 2:
        raise DataError(f"{prepared_dir}: the training splits hold {len(indices)} samples; need at least 2")
    channels = data.meta["channels"]
    ddp = init_distributed()
    device = resolve_device(gparams.device, ddp.local_rank)
    seed_everything(gparams.seed)

    image_size = training_side(params, int(data.images.shape[1]))
    backbone = build_backbone(params.backbone, channels, image_size, **backbone_options(params))
    method = METHODS[params.method].build(backbone, params)
    if ddp.enabled and device.type == "cuda":  # batch statistics over every process's part of the batch
        method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
    precision = amp_dtype(device, params.precision)
    # channels-last lets cuDNN use tensor cores for convolutions; on the CPU it only reorders memory
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    method = method.to(device, memory_format=memory_format)
    model = DistributedDataParallel(method) if ddp.enabled else method
    scaler = torch.amp.GradScaler(device.type, enabled=precision == torch.float16)  # float16 underflows without it
    batch_size = min(params.batch_size, len(indices))
    if batch_size % ddp.world_size:
        raise DataError(f"pretrain.batch_size={batch_size} must be divisible by the {ddp.world_size} processes")
    steps_per_epoch = len(epoch_batches(len(indices), batch_size, 0, 0))
    total_steps = steps_per_epoch * params.epochs
    updates_per_epoch = math.ceil(steps_per_epoch / params.accumulate_steps)
    # linear scaling rule (Goyal et al. 2017), on the batch of one update
    lr = params.lr * batch_size * params.accumulate_steps / 256
    trainable = [p for p in method.parameters() if p.requires_grad]  # not MoCo's key encoder
    optimizer = build_optimizer(params.optimizer, trainable, lr, params.weight_decay, params.momentum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: warmup_cosine(
            s, params.warmup_epochs * updates_per_epoch, updates_per_epoch * params.epochs, params.schedule
        ),
    )
    augment = build_augmenter(params.augment.preset, **params.augment.strengths())

    # A checkpoint resumes only the very run it came from: same parameters, data and training code.
    code = digest_files(stage_modules("pretrain"))  # the files dvc.yaml lists as the stage's code
    data_files = digest_files([Path(prepared_dir) / f for f in (SAMPLES_FILE, META_FILE)])
    run_id = fingerprint(gparams, train_splits, params, ddp.world_size, code, data_files, list(data.images.shape))
    checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_FILE
    start_epoch, history = 0, []
    state = None
    if checkpoint_path.exists():
        try:
            state = load_torch(checkpoint_path)
        except DataError as err:  # a foreign, altered or damaged file: start afresh rather than trust it
            log.warning("ignoring the checkpoint: %s", err)
    if state is not None:
        if state.get("run_id") == run_id:
            method.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            start_epoch, history = state["epoch"], list(state["history"])
            torch.set_rng_state(state["rng"])
            log.info("resuming from %s at epoch %d", checkpoint_path, start_epoch)
        else:
            log.info("ignoring %s: it belongs to another configuration", checkpoint_path)

    live = _open_live(Path(live_dir), history) if ddp.is_main else None
    started = time.perf_counter()
    stopped = stop_early([row["loss"] for row in history], params.early_stopping)  # a resumed run that had stopped
    for epoch in range(start_epoch, params.epochs):
        if stopped:
            break
        model.train()
        generator = torch.Generator(device=device).manual_seed(gparams.seed * 100_003 + epoch * 101 + ddp.rank)
        losses = []
        epoch_started = time.perf_counter()
        batches = epoch_batches(len(indices), batch_size, gparams.seed, epoch)
        bar = progress(
            total=len(batches) * batch_size,
            unit="img",
            desc=f"pretrain epoch {epoch + 1}/{params.epochs}",
            disable=not ddp.is_main,
            unit_scale=True,
        )
        for step, batch in enumerate(batches):
            if hasattr(method, "set_progress"):  # schedules of the method's own (MoCo's temperature)
                method.set_progress((epoch * steps_per_epoch + step) / max(1, total_steps))
            local = np.sort(indices[np.array_split(batch, ddp.world_size)[ddp.rank]])
            x = to_float_images(data.images[local], device, params.image_size).contiguous(memory_format=memory_format)
            update = (step + 1) % params.accumulate_steps == 0 or step + 1 == len(batches)
            # DDP averages gradients across processes only on the batch that updates
            with model.no_sync() if ddp.enabled and not update else contextlib.nullcontext():
                with autocast(device, precision):
                    loss = model(augment(x, generator), augment(x, generator))  # forward() is the loss
                scaler.scale(loss / params.accumulate_steps).backward()
            if update:
                scaler.step(optimizer)  # skips the step when float16 gradients overflowed
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(
                check_finite_loss(
                    loss.item(),
                    f"pretrain {params.method}",
                    epoch,
                    step,
                    "Try a lower pretrain.lr, or pretrain.precision: fp32",
                )
            )
            bar.update(len(batch))
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        bar.close()
        row = {
            "epoch": epoch + 1,
            "loss": ddp.all_reduce_mean(float(np.mean(losses))),
            "lr": scheduler.get_last_lr()[0],
            "temperature": float(method.temperature),
            "images_per_second": len(batches) * batch_size / (time.perf_counter() - epoch_started),
        }
        history.append(row)
        stopped = stop_early([r["loss"] for r in history], params.early_stopping)
        if ddp.is_main:
            log.info("epoch %d/%d loss %.4f", epoch + 1, params.epochs, row["loss"])
            for key in LOGGED:
                live.log_metric(key, row[key])
            live.next_step()
            if stopped:
                log.info(
                    "early stopping: no loss improvement of %g for %d epochs",
                    params.early_stopping.min_delta,
                    params.early_stopping.patience,
                )
            if (epoch + 1) % params.checkpoint_every == 0 or epoch + 1 == params.epochs or stopped:
                save_torch(
                    checkpoint_path,
                    {  # the MoCo queue and pointer are buffers of "model"
                        "run_id": run_id,
                        "epoch": epoch + 1,
                        "history": history,
                        "model": method.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "rng": torch.get_rng_state(),
                    },
                )
    seconds = time.perf_counter() - started
    trained = len(history) - start_epoch
    if trained > 0:
        log.info(
            "trained %d epochs in %.1fs (%.0f samples/s)",
            trained,
            seconds,
            trained * steps_per_epoch * batch_size / seconds,
        )
    if ddp.is_main:
        live.end()
        save_encoder(encoder_path, method.backbone, params, channels, image_size)
        # the run is done: its resume state goes, so DVC caches an empty folder, not a copy of the model
        checkpoint_path.unlink(missing_ok=True)
    ddp.barrier()
    ddp.close()
    if not ddp.is_main:
        return None
    return {
        "method": params.method,
        "epochs": len(history),
        "stopped_early": bool(stopped),
        "final_loss": history[-1]["loss"] if history else None,
        "resumed_from_epoch": start_epoch,
        "train_samples": int(len(indices)),
        "images_trained": int(trained * steps_per_epoch * batch_size),  # this run's, not resumed epochs'
        "world_size": ddp.world_size,
        "device": device.type,
    }
