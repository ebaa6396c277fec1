"""What a stage costs, recorded beside what it produced: wall time, peak memory and, where images go
through a network, images per second. Stages put it under ``cost`` in their metrics JSON, so that
``dvc exp show`` and ``python -m imageclust compare`` show each method's cost next to its scores."""

from __future__ import annotations

import resource
import sys
import time

_started = time.perf_counter()  # reset by start(); the import time of a stage script is not its work


def start() -> None:
    """Start the clock of this process's stage (``run_stage`` calls it before the stage's main)."""
    global _started
    _started = time.perf_counter()


def _rss_mib(who: int) -> float:
    peak = resource.getrusage(who).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def measure(images: int | None = None) -> dict:
    """Seconds since ``start()``, this process's peak resident memory (and its finished children's,
    such as DataLoader workers, and the GPU's where CUDA ran), and ``images`` / seconds."""
    seconds = time.perf_counter() - _started
    cost = {"seconds": round(seconds, 2), "peak_memory_mib": round(_rss_mib(resource.RUSAGE_SELF))}
    children = _rss_mib(resource.RUSAGE_CHILDREN)
    if children:
        cost["peak_memory_children_mib"] = round(children)
    torch = sys.modules.get("torch")  # only where the stage imported it: never pay for the import here
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        cost["gpu_peak_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    if images is not None:
        cost["images"] = int(images)
        cost["images_per_s"] = round(images / seconds, 1) if seconds > 0 else None
    return cost
