"""Inference engines for a frozen backbone on the CPU: PyTorch (channels-last, optionally bfloat16
autocast), ONNX Runtime and OpenVINO (FP32 or bfloat16), chosen by measuring them where they run.

``extract.engine: auto`` times every engine and precision this machine has on a sample batch of the
data and keeps the fastest whose features agree with PyTorch FP32 (lowest cosine over the sample at
least ``MIN_COSINE``). The choice and the exported graphs live in this machine's cache folder
(``default_cache_dir``, logged when used), keyed by the weights, the input shape, the libraries and
the CPU, so a rerun neither exports nor measures again, and makes the same choice: the same
features, run after run. An engine whose package is missing, or a precision the CPU lacks, is left
out with one log line. On CUDA, PyTorch runs with its own mixed precision, as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..io import atomic_dir, atomic_path
from ..runtime import autocast

log = logging.getLogger(__name__)

ENGINES = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16")
MIN_COSINE = 0.999  # a faster engine or lower precision is kept only when its features agree this well
MIN_SECONDS_TO_PROBE = 5.0  # below this much PyTorch FP32 time for the whole data, measuring costs more than it saves
TIMED_RUNS = 3

Runner = Callable[[torch.Tensor], torch.Tensor]  # preprocessed (n, c, h, w) floats -> (n, d) float32


def default_cache_dir() -> Path:
    """This machine's cache of exported graphs and engine choices: ``$IMAGECLUST_CACHE/engines``, else
    ``$XDG_CACHE_HOME/imageclust/engines``, else ``~/.cache/imageclust/engines``. It belongs to the machine,
    not to a run: every experiment (queued ones in their own folders too) shares it."""
    if os.environ.get("IMAGECLUST_CACHE"):
        return Path(os.environ["IMAGECLUST_CACHE"]) / "engines"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "imageclust" / "engines"


def cpu_flags() -> list[str]:
    """The CPU's vector and matrix extensions that decide what runs fast (Linux; empty elsewhere)."""
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    have = set(line.split(":", 1)[-1].split())
    return [flag for flag in wanted if flag in have]


def cpu_has_bf16() -> bool:
    return any(flag in cpu_flags() for flag in ("avx512_bf16", "amx_bf16"))


# ---------------------------------------------------------------- runners


def torch_runner(model: nn.Module, precision: str, device: torch.device) -> Runner:
    """PyTorch on ``device``: channels-last for convolutions; bf16 autocast when asked for."""
    model = model.to(device).eval()
    channels_last = any(isinstance(m, nn.Conv2d) for m in model.modules())
    if channels_last:  # about twice as fast for convolutions, depthwise ones above all, on CPUs too
        model = model.to(memory_format=torch.channels_last)
    # CUDA: its own mixed precision, as the stage always ran; the CPU: full precision unless asked
    dtype = "auto" if device.type == "cuda" else (torch.bfloat16 if precision == "bf16" else None)

    @torch.inference_mode()
    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, dtype):
            return model(x).float()

    return run


def _padded(run_fixed: Callable[[np.ndarray], np.ndarray], batch: int) -> Runner:
    """A graph made for ``batch`` rows: larger inputs go in pieces, a short piece is padded with
    zeros and cut after."""

    def run(x: torch.Tensor) -> torch.Tensor:
        array = x.detach().cpu().float().numpy()
        out = []
        for start in range(0, len(array), batch):
            piece = array[start : start + batch]
            n = len(piece)
            if n < batch:
                piece = np.concatenate([piece, np.zeros((batch - n, *piece.shape[1:]), np.float32)])
            out.append(np.asarray(run_fixed(np.ascontiguousarray(piece)), np.float32)[:n])
        return torch.from_numpy(np.concatenate(out))

    return run


@contextlib.contextmanager
def _quiet_tracing():
    """Exporting traces the model once; PyTorch's notices about its tracer are not the user's concern."""
    with warnings.catch_warnings():
        for category in (FutureWarning, DeprecationWarning, UserWarning, torch.jit.TracerWarning):
            warnings.simplefilter("ignore", category=category)
        yield


def onnxruntime_runner(model: nn.Module, example: torch.Tensor, cache: Path, precision: str) -> Runner:
    import onnxruntime as ort

    if precision != "fp32":
        raise RuntimeError("ONNX Runtime's CPU provider runs these graphs in FP32 only")
    path = cache / "model.onnx"
    if not path.is_file():  # exported once per backbone and input shape
        with atomic_dir(cache) as tmp, torch.no_grad(), _quiet_tracing():
            # the TorchScript exporter needs no extra package (the dynamo one needs onnxscript)
            torch.onnx.export(
                model.eval().float(),
                (example.cpu(),),
                str(tmp / path.name),
                input_names=["images"],
                output_names=["features"],
                opset_version=17,
                dynamo=False,
            )
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return _padded(lambda array: session.run(None, {"images": array})[0], len(example))


def openvino_runner(model: nn.Module, example: torch.Tensor, cache: Path, precision: str) -> Runner:
    import openvino as ov

    core = ov.Core()
    if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise RuntimeError("this CPU has no bfloat16 instructions")
    path = cache / "model.xml"
    if not path.is_file():  # converted once per backbone and input shape: the graph and its weights
        with torch.no_grad(), _quiet_tracing():
            converted = ov.convert_model(model.eval().float(), example_input=example.cpu())
        with atomic_dir(cache) as tmp:
            ov.save_model(converted, str(tmp / path.name), compress_to_fp16=False)
    config = {
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        "INFERENCE_NUM_THREADS": torch.get_num_threads(),
        "PERFORMANCE_HINT": "LATENCY",
    }
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    request = compiled.create_infer_request()
    return _padded(lambda array: request.infer({0: array})[compiled.output(0)], len(example))


def build_runner(
    engine: str, precision: str, model: nn.Module, example: torch.Tensor, cache: Path, device: torch.device
) -> Runner:
    if engine == "torch":
        if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
            raise RuntimeError("this CPU has no bfloat16 instructions (PyTorch would emulate them slowly)")
        return torch_runner(model, precision, device)
    return {"onnxruntime": onnxruntime_runner, "openvino": openvino_runner}[engine](model, example, cache, precision)


# ---------------------------------------------------------------- choosing


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
) -> tuple[Runner, EngineChoice]:
    """The runner for ``extract.engine`` and ``extract.precision`` (``auto``: measured here, see the
    module's docstring), with the record of the choice. ``sample`` is one preprocessed batch: its size
    is the batch the exported graphs take."""
    reference_run = torch_runner(model, "fp32", device)
    if device.type != "cpu":
        return reference_run, EngineChoice(reason=f"{device.type}: PyTorch with its own mixed precision")
    if not any(True for _ in model.parameters()):
        return reference_run, EngineChoice(reason="no weights (raw pixels): nothing to speed up")
    folder = Path(cache_dir) / cache_key(model, sample) if cache_dir is not None else None
    recorded = folder / f"choice-{engine}-{precision}.json" if folder is not None else None
    if recorded is not None and recorded.is_file():  # measured before on this machine: the same choice again
        try:
            choice = EngineChoice(**json.loads(recorded.read_text()))
            runner = build_runner(choice.engine, choice.precision, model, sample, folder / choice.engine, device)
            log.info("engine: %s %s, as chosen earlier on this machine (%s)", choice.engine, choice.precision, recorded)
            return runner, choice
        except Exception as err:  # a damaged cache: measure again
            log.warning("cached engine choice in %s unusable (%s); measuring again", folder, _first_line(err))
    runner, choice = _measure(model, sample, engine, precision, folder or _scratch(), device, total_rows, reference_run)
    if recorded is not None:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(recorded) as tmp:
            tmp.write_text(json.dumps(choice.to_dict(), indent=2))
        log.info("engine choice kept in %s", recorded)
    return runner, choice


def _measure(model, sample, engine, precision, folder: Path, device, total_rows, reference_run):
    wanted = [
        (e, p)
        for e in (ENGINES if engine == "auto" else (engine,))
        for p in (PRECISIONS if precision == "auto" else (precision,))
    ]
    reference = reference_run(sample)
    reference_speed = _time(reference_run, sample)
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
            run = build_runner(name, prec, model, sample, folder / name, device)
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
        if "images_per_second" in m and (m["engine"], m["precision"]) in wanted and m["cosine_to_fp32"] >= MIN_COSINE
    ]
    if agreeing:
        best = max(agreeing, key=lambda m: m["images_per_second"])
        reason = "the fastest whose features agree with PyTorch FP32" if len(wanted) > 1 else "as asked"
    else:  # an explicit engine that cannot run here, or features that disagree
        best, reason = measured[0], f"extract.engine={engine}, extract.precision={precision}: none usable here"
        log.warning("%s; PyTorch FP32 instead", reason)
    choice = EngineChoice(
        best["engine"], best["precision"], best["images_per_second"], best["cosine_to_fp32"], reason, measured
    )
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
