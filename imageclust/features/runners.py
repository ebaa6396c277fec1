"""How a frozen backbone runs on a CPU: PyTorch (channels-last, optionally bfloat16 autocast), ONNX
Runtime (FP32, or int8 quantised on a batch of the data) and OpenVINO (FP32, bfloat16 or that int8
graph), each as a ``Runner``: preprocessed images in, FP32 features out. ``engines.py`` chooses."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..io import atomic_dir, atomic_path
from ..runtime import autocast

Runner = Callable[[torch.Tensor], torch.Tensor]  # preprocessed (n, c, h, w) floats -> (n, d) float32


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


def onnx_graph(model: nn.Module, example: torch.Tensor, folder: Path) -> Path:
    """The model as an FP32 ONNX graph in ``folder``, exported once per backbone and input shape."""
    path = folder / "model.onnx"
    if not path.is_file():
        with atomic_dir(folder) as tmp, torch.no_grad(), _quiet_tracing():
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
    return path


def calibration_digest(example: torch.Tensor) -> str:
    """Names the batch an int8 graph was calibrated on: the graph depends on the data, not only the weights."""
    return hashlib.sha256(example.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()[:16]


def int8_graph(model: nn.Module, example: torch.Tensor, cache: Path, calibration: str | None = None) -> Path:
    """Static post-training quantisation with ONNX Runtime's tool (Jacob et al., CVPR 2018): per-channel
    symmetric int8 weights and uint8 activations, whose ranges are calibrated (min-max) on ``example``, in
    the QDQ format that both ONNX Runtime and OpenVINO run on int8 instructions. One graph per calibration
    batch, beside the engines' folders; ``calibration`` asks for the graph a run made on its own data (as
    ``predict`` does), which is never remade from other images."""
    digest = calibration or calibration_digest(example)
    path = cache.parent / "int8" / f"model-{digest}.onnx"
    if path.is_file():
        return path
    if calibration is not None and calibration != calibration_digest(example):
        raise RuntimeError(f"the int8 graph calibrated on the run's data ({path}) is not in this machine's cache")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class OneBatch(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"images": example.detach().cpu().float().numpy()}])

        def get_next(self):
            return next(self.batches, None)

    source = onnx_graph(model, example, cache.parent / "onnxruntime")
    path.parent.mkdir(parents=True, exist_ok=True)
    logging.disable(logging.INFO)  # the quantiser logs every rescaled weight on the root logger
    try:
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp, _quiet_tracing(), atomic_path(path) as out:
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(str(source), str(prepared))  # shapes and fusions the quantiser needs
            quantize_static(
                str(prepared),
                str(Path(tmp) / "int8.onnx"),
                OneBatch(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
            os.replace(Path(tmp) / "int8.onnx", out)
    finally:
        logging.disable(logging.NOTSET)
    return path


def onnxruntime_runner(
    model: nn.Module, example: torch.Tensor, cache: Path, precision: str, calibration: str | None = None
) -> Runner:
    import onnxruntime as ort

    if precision == "bf16":
        raise RuntimeError("ONNX Runtime's CPU provider runs these graphs in FP32 or int8 only")
    if precision == "int8":
        path = int8_graph(model, example, cache, calibration)
    else:
        path = onnx_graph(model, example, cache)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return _padded(lambda array: session.run(None, {"images": array})[0], len(example))


@functools.cache
def openvino_core():
    """The process's one OpenVINO Core. Each Core's CPU plugin gives the calling thread its own signal
    stack and, when freed, puts back the one it found: Cores freed out of order (runners measured and
    dropped) left the stack pointing at unmapped memory, and the next signal with a Python handler (a
    loader worker's SIGCHLD, Ctrl-C) killed the process with SIGSEGV before any handler could run."""
    import openvino as ov

    return ov.Core()


def openvino_runner(
    model: nn.Module, example: torch.Tensor, cache: Path, precision: str, calibration: str | None = None
) -> Runner:
    import openvino as ov

    core = openvino_core()
    if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise RuntimeError("this CPU has no bfloat16 instructions")
    path = cache / "model.xml"
    if precision == "int8":  # OpenVINO reads the quantised ONNX graph and runs its int8 parts as int8
        path = int8_graph(model, example, cache, calibration)
    elif not path.is_file():  # converted once per backbone and input shape: the graph and its weights
        with torch.no_grad(), _quiet_tracing():
            converted = ov.convert_model(model.eval().float(), example_input=example.cpu())
        with atomic_dir(cache) as tmp:
            ov.save_model(converted, str(tmp / path.name), compress_to_fp16=False)
    config = {
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        "INFERENCE_NUM_THREADS": torch.get_num_threads(),
        "PERFORMANCE_HINT": "LATENCY",
    }
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)  # int8: the graph's own precision
    request = compiled.create_infer_request()
    return _padded(lambda array: request.infer({0: array})[compiled.output(0)], len(example))


def build_runner(
    engine: str,
    precision: str,
    model: nn.Module,
    example: torch.Tensor,
    cache: Path,
    device: torch.device,
    calibration: str | None = None,
) -> Runner:
    """``engine`` in ``precision``, its graphs in ``cache`` (``int8``: calibrated on ``example``, or the
    graph named ``calibration``)."""
    if engine == "torch":
        if precision == "int8":
            raise RuntimeError("int8 runs through ONNX Runtime or OpenVINO, not eager PyTorch")
        if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
            raise RuntimeError("this CPU has no bfloat16 instructions (PyTorch would emulate them slowly)")
        return torch_runner(model, precision, device)
    runner = {"onnxruntime": onnxruntime_runner, "openvino": openvino_runner}[engine]
    return runner(model, example, cache, precision, calibration)
