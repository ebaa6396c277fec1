"""Inference engines for a frozen backbone on the CPU: PyTorch (channels-last, optionally bfloat16
autocast), ONNX Runtime (FP32, int8) and OpenVINO (FP32, bfloat16, int8), chosen by measuring them
where they run (``runners.py`` builds each).

``extract.engine: auto`` times every engine and precision this machine has on a sample batch of the
data and keeps the fastest whose features agree with PyTorch FP32 (lowest cosine over the sample at
least ``extract.min_cosine``, 0.999 by default). The choice and the exported graphs live in this
machine's cache folder (``default_cache_dir``, logged when used), keyed by the weights, the input
shape, the libraries and the CPU (int8 graphs, calibrated on that batch, and the choice also by the
batch), so a rerun neither exports nor measures again, and makes the same choice: the same
features, run after run. An engine whose package is missing, or a precision the CPU lacks, is left
out with one log line. On CUDA, PyTorch runs with its own mixed precision, as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..io import atomic_path
from .runners import Runner, build_runner, calibration_digest, cpu_flags, torch_runner

log = logging.getLogger(__name__)

ENGINES = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
RUNS = {  # what each engine runs: ONNX Runtime's CPU provider has no bf16 kernels, eager PyTorch no int8 path
    "torch": ("fp32", "bf16"),
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "int8"),
}
MIN_COSINE = 0.999  # extract.min_cosine's default: how well a faster engine's features must agree to be kept
ANY_COSINE = -1.0  # predict runs what the run ran: its guard was applied on the run's own data
MIN_SECONDS_TO_PROBE = 5.0  # below this much PyTorch FP32 time for the whole data, measuring costs more than it saves
MIN_SECONDS_TO_QUANTIZE = 60.0  # int8 costs a calibration pass (seconds): auto tries it only for longer runs
TIMED_RUNS = 3


def default_cache_dir() -> Path:
    """This machine's cache of exported graphs and engine choices: ``$IMAGECLUST_CACHE/engines``, else
    ``$XDG_CACHE_HOME/imageclust/engines``, else ``~/.cache/imageclust/engines``. It belongs to the machine,
    not to a run: every experiment (queued ones in their own folders too) shares it."""
    if os.environ.get("IMAGECLUST_CACHE"):
        return Path(os.environ["IMAGECLUST_CACHE"]) / "engines"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "imageclust" / "engines"


@dataclass
class EngineChoice:
    """What the extract stage runs, and why (recorded in ``metrics/extract.json``)."""

    engine: str = "torch"
    precision: str = "fp32"
    images_per_second: float | None = None  # on the sample batch, model only
    cosine_to_fp32: float | None = None  # lowest over the sample batch
    reason: str = ""
    measured: list[dict] = field(default_factory=list)  # every candidate: engine, precision, images/s, cosine
    cpu_flags: list[str] = field(default_factory=cpu_flags)
    calibration: str | None = None  # int8: the batch its graph was calibrated on (runners.calibration_digest)

    def to_dict(self) -> dict:
        return asdict(self)


def _weights_digest(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_key(model: nn.Module, example: torch.Tensor) -> str:
    """The folder of one backbone at one input shape (batch included), for this machine's libraries."""
    import importlib.metadata as md

    versions = []
    for package in ("torch", "onnxruntime", "openvino"):
        try:
            versions.append(f"{package}={md.version(package)}")
        except md.PackageNotFoundError:
            pass
    text = json.dumps([_weights_digest(model), list(example.shape), versions, cpu_flags()])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    both_zero = (a.norm(dim=1) == 0) & (b.norm(dim=1) == 0)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12)
    return float(torch.where(both_zero, torch.ones_like(cos), cos).min())


def _time(run: Runner, sample: torch.Tensor) -> float:
    run(sample)  # warm-up: compilation, caches
    started = time.perf_counter()
    for _ in range(TIMED_RUNS):
        run(sample)
    return TIMED_RUNS * len(sample) / (time.perf_counter() - started)


def choose_engine(
    model: nn.Module,
    sample: torch.Tensor,
    engine: str,
    precision: str,
    cache_dir: Path | None,
    device: torch.device,
    total_rows: int,
    min_cosine: float = MIN_COSINE,
    calibration: str | None = None,
) -> tuple[Runner, EngineChoice]:
    """The runner for ``extract.engine`` and ``extract.precision`` (``auto``: measured here, see the
    module's docstring), with the record of the choice. ``sample`` is one preprocessed batch: its size
    is the batch the exported graphs take, and an int8 graph is calibrated on it (or is the one named
    ``calibration``). A candidate whose lowest cosine to PyTorch FP32 is under ``min_cosine`` is refused."""
    reference_run = torch_runner(model, "fp32", device)
    if device.type != "cpu":
        return reference_run, EngineChoice(reason=f"{device.type}: PyTorch with its own mixed precision")
    if not any(True for _ in model.parameters()):
        return reference_run, EngineChoice(reason="no weights (raw pixels): nothing to speed up")
    folder = Path(cache_dir) / cache_key(model, sample) if cache_dir is not None else None
    # per sample too: an int8 graph, and so the choice, depends on the data it was calibrated on
    calibration = calibration or calibration_digest(sample)
    name = f"choice-{engine}-{precision}-{min_cosine:g}-{calibration}.json"
    recorded = folder / name if folder is not None else None
    if recorded is not None and recorded.is_file():  # measured before on this machine: the same choice again
        try:
            choice = EngineChoice(**json.loads(recorded.read_text()))
            where = folder / choice.engine
            runner = build_runner(choice.engine, choice.precision, model, sample, where, device, choice.calibration)
            log.info("engine: %s %s, as chosen earlier on this machine (%s)", choice.engine, choice.precision, recorded)
            return runner, choice
        except Exception as err:  # a damaged cache: measure again
            log.warning("cached engine choice in %s unusable (%s); measuring again", folder, _first_line(err))
    asked = (engine, precision, min_cosine, calibration)
    runner, choice = _measure(model, sample, asked, folder or _scratch(), device, total_rows, reference_run)
    if recorded is not None:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(recorded) as tmp:
            tmp.write_text(json.dumps(choice.to_dict(), indent=2))
        log.info("engine choice kept in %s", recorded)
    return runner, choice


def _measure(model, sample, asked, folder: Path, device, total_rows, reference_run):
    engine, precision, min_cosine, calibration = asked
    reference = reference_run(sample)
    reference_speed = _time(reference_run, sample)
    quantize = precision == "int8" or total_rows / reference_speed >= MIN_SECONDS_TO_QUANTIZE
    wanted = [
        (e, p)
        for e in (ENGINES if engine == "auto" else (engine,))
        for p in (PRECISIONS if precision == "auto" else (precision,))
        if (engine != "auto" and precision != "auto") or (p in RUNS[e] and (p != "int8" or quantize))
    ]
    measured = [
        {"engine": "torch", "precision": "fp32", "images_per_second": round(reference_speed, 1), "cosine_to_fp32": 1.0}
    ]
    fp32 = EngineChoice(images_per_second=measured[0]["images_per_second"], cosine_to_fp32=1.0, measured=measured)
    if wanted == [("torch", "fp32")]:
        fp32.reason = "extract.engine=torch, extract.precision=fp32"
        return reference_run, fp32
    if (engine, precision) == ("auto", "auto") and total_rows / reference_speed < MIN_SECONDS_TO_PROBE:
        fp32.reason = (
            f"PyTorch FP32 extracts all {total_rows} rows in about {total_rows / reference_speed:.1f}s: "
            "nothing to gain from measuring the others"
        )
        return reference_run, fp32
    runners: dict[tuple[str, str], Runner] = {("torch", "fp32"): reference_run}
    for name, prec in wanted:
        if (name, prec) == ("torch", "fp32"):
            continue
        try:
            run = build_runner(name, prec, model, sample, folder / name, device, calibration)
            cosine = _cosine(run(sample), reference)
            speed = _time(run, sample)
        except Exception as err:  # a missing package, an unsupported precision or operator: left out
            log.info("engine %s %s left out: %s", name, prec, _first_line(err))
            measured.append({"engine": name, "precision": prec, "unavailable": _first_line(err)})
            continue
        runners[(name, prec)] = run
        measured.append(
            {
                "engine": name,
                "precision": prec,
                "images_per_second": round(speed, 1),
                "cosine_to_fp32": round(cosine, 7),
            }
        )
    agreeing = [
        m
        for m in measured
        if "images_per_second" in m and (m["engine"], m["precision"]) in wanted and m["cosine_to_fp32"] >= min_cosine
    ]
    if agreeing:
        best = max(agreeing, key=lambda m: m["images_per_second"])
        reason = (
            f"the fastest whose features agree with PyTorch FP32 (lowest cosine >= {min_cosine:g})"
            if len(wanted) > 1
            else "as asked"
        )
    else:  # an explicit engine that cannot run here, or features that disagree
        best, reason = measured[0], f"extract.engine={engine}, extract.precision={precision}: none usable here"
        log.warning("%s; PyTorch FP32 instead", reason)
    choice = EngineChoice(
        best["engine"], best["precision"], best["images_per_second"], best["cosine_to_fp32"], reason, measured
    )
    if choice.precision == "int8":
        choice.calibration = calibration
    log.info(
        "engine: %s %s, %.0f images/s on a sample batch (PyTorch FP32: %.0f), cosine to FP32 %.6f",
        choice.engine,
        choice.precision,
        choice.images_per_second,
        reference_speed,
        choice.cosine_to_fp32,
    )
    return runners[(choice.engine, choice.precision)], choice


def _scratch() -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="imageclust-engine-"))


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
