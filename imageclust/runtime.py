"""Where code runs: device choice, seeding, mixed precision and the DDP process group.

Launched plainly, a stage is one process on the best device available. Launched through
``torchrun --nproc_per_node N``, the same code joins a process group (NCCL on CUDA, gloo on CPU)
and each rank trains on its share of every batch.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from .errors import ParamsError, TrainingError


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU; a named device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError("params: device='cuda' is invalid: no CUDA device is available; use auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ParamsError("params: device='mps' is invalid: MPS is not available; use auto or cpu")
    return torch.device(name, local_rank) if name == "cuda" else torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def amp_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (None: full precision). ``auto`` is bfloat16
    on CUDA devices that have it, else float16 (which needs loss scaling), and full precision on the
    CPU, where autocast usually costs more than it saves."""
    if precision == "fp32":
        return None
    if device.type != "cuda":
        if precision == "fp16":
            raise ParamsError(
                f"params: pretrain.precision='fp16' is invalid on {device.type}: float16 needs a CUDA "
                "device; use bf16 or fp32"
            )
        return torch.bfloat16 if precision == "bf16" else None
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None | str = "auto"):
    """Mixed precision in ``dtype`` (or the one ``amp_dtype`` picks for a precision name)."""
    if isinstance(dtype, str):
        dtype = amp_dtype(device, dtype)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@dataclass
class Distributed:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_mean(self, value: float) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        return t.item() / self.world_size

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed() -> Distributed:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return Distributed(rank=rank, local_rank=local_rank, world_size=world_size)


def resize_square(x: torch.Tensor, side: int) -> torch.Tensor:
    """(n, c, h, w) -> (n, c, side, side): the shorter side scaled to ``side``, the centre square kept.

    Bilinear, antialiased when shrinking, as torchvision's ``Resize``. uint8 input stays uint8 (on the
    CPU PyTorch's vectorised uint8 kernel, about ten times faster than on floats). The one resize of
    the extract stage's preprocessing and of the networks trained at their own side
    (``pretrain.image_size``), so an encoder sees the pixels it was trained on.
    """
    h, w = x.shape[-2:]
    scale = side / min(h, w)
    size = (max(side, math.ceil(h * scale - 1e-6)), max(side, math.ceil(w * scale - 1e-6)))
    if x.dtype == torch.uint8:  # antialias=True selects the uint8 kernel; upscaling, it is plain bilinear
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    else:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    top, left = (size[0] - side) // 2, (size[1] - side) // 2
    return x[:, :, top : top + side, left : left + side]


def to_float_images(batch: np.ndarray, device: torch.device, side: int | None = None) -> torch.Tensor:
    """uint8 (n, h, w, c) pixels -> float (n, c, h, w) in [0, 1] on ``device``; resized to ``side``
    (``resize_square``) where given and the pixels' size differs."""
    x = torch.from_numpy(np.array(batch, copy=True)).to(device, non_blocking=True)  # memmaps are read-only
    x = x.permute(0, 3, 1, 2)
    if side is not None and tuple(x.shape[-2:]) != (side, side):
        x = resize_square(x if x.device.type == "cpu" else x.float(), side)
    return x.float().div_(255.0)


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Every process's ``t`` stacked in rank order; gradients flow back to the process that owns each
    row (summed over the processes' losses), so a loss on the gathered rows trains every process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(t))


@torch.no_grad()
def gather(t: torch.Tensor) -> torch.Tensor:
    """Every process's ``t`` stacked in rank order, without gradients."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def check_finite_loss(value: float, where: str, epoch: int, step: int, hint: str) -> float:
    """``value``, or a ``TrainingError`` that says where the loss stopped being a number (epoch and step
    counted from 1): a diverged run stops instead of writing features or clusters made from NaN."""
    if not math.isfinite(value):
        raise TrainingError(
            f"{where}: the loss is {value} at epoch {epoch + 1}, step {step + 1}; stopped before "
            f"writing anything (the last checkpoint is kept). {hint}"
        )
    return value
