"""Inference engines: each gives PyTorch FP32's features, a missing one is left out with a log line,
the exported graph and the choice are reused on a rerun, and the stage records what it ran."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO

from imageclust.config import GlobalParams
from imageclust.features import engines
from imageclust.features.engines import MIN_COSINE, choose_engine
from imageclust.features.params import ExtractParams
from imageclust.features.runners import build_runner, cpu_has_bf16, torch_runner
from imageclust.features.stage import extract_features
from imageclust.models.backbones import build_backbone
from imageclust.tables import read_features, read_features_meta

CPU = torch.device("cpu")


def small_model():
    torch.manual_seed(0)
    return build_backbone("small_cnn", 1, 8, widths=[4, 8]).eval()


def sample(n=16):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1)


@pytest.mark.parametrize(
    "engine, precision",
    [("torch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32"), ("torch", "bf16"), ("openvino", "bf16")],
)
def test_each_engine_gives_the_features_of_pytorch_fp32(engine, precision, tmp_path):
    if precision == "bf16" and not cpu_has_bf16():
        pytest.skip("this CPU has no bfloat16 instructions")
    pytest.importorskip({"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}[engine])
    model, x = small_model(), sample()
    reference = torch_runner(model, "fp32", CPU)(x)
    run = build_runner(engine, precision, model, x, tmp_path / engine, CPU)
    out = run(x)
    assert out.shape == reference.shape and out.dtype == torch.float32
    assert cosines(out, reference).min() >= (0.999999 if precision == "fp32" else MIN_COSINE)
    # a short last batch and a longer one than the graph was made for
    assert torch.allclose(run(x[:5]), out[:5], atol=1e-5) and run(torch.cat([x, x]))[16:].allclose(out, atol=1e-5)


def test_auto_keeps_the_fastest_that_agrees_and_reuses_the_graph_and_the_choice(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    model, x = small_model(), sample()
    run, choice = choose_engine(model, x, "auto", "auto", tmp_path, CPU, total_rows=10**9)
    assert (choice.engine, choice.precision) in {(m["engine"], m["precision"]) for m in choice.measured}
    tried = {(m["engine"], m["precision"]) for m in choice.measured}
    assert {("torch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32")} <= tried
    speeds = {
        (m["engine"], m["precision"]): m["images_per_second"]
        for m in choice.measured
        if "images_per_second" in m and m["cosine_to_fp32"] >= MIN_COSINE
    }
    assert speeds[(choice.engine, choice.precision)] == max(speeds.values())
    assert cosines(run(x), torch_runner(model, "fp32", CPU)(x)).min() >= MIN_COSINE
    folder = next(tmp_path.iterdir())
    assert (folder / "onnxruntime" / "model.onnx").is_file() and (folder / "openvino" / "model.xml").is_file()
    assert json.loads(next(folder.glob("choice-auto-auto-0.999-*.json")).read_text())["engine"] == choice.engine

    # a rerun on this machine: neither exported nor measured again, the same choice
    def never(*args, **kwargs):
        raise AssertionError("exported or measured again")

    monkeypatch.setattr(engines, "_time", never)
    monkeypatch.setattr(torch.onnx, "export", never)
    monkeypatch.setattr(engines, "_measure", never)
    again, same = choose_engine(model, x, "auto", "auto", tmp_path, CPU, total_rows=10**9)
    assert (same.engine, same.precision) == (choice.engine, choice.precision)
    assert torch.allclose(again(x), run(x))


def test_an_explicit_engine_reuses_the_graphs_auto_exported(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    model, x = small_model(), sample()
    choose_engine(model, x, "auto", "fp32", tmp_path, CPU, total_rows=10**9)
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: pytest.fail("exported again"))
    _, choice = choose_engine(model, x, "onnxruntime", "fp32", tmp_path, CPU, total_rows=10)
    assert (choice.engine, choice.precision, choice.reason) == ("onnxruntime", "fp32", "as asked")


def test_a_missing_package_is_left_out_with_one_log_line(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    model, x = small_model(), sample()
    caplog.set_level("INFO")
    _, choice = choose_engine(model, x, "auto", "fp32", tmp_path, CPU, total_rows=10**9)
    assert choice.engine != "onnxruntime"
    assert any("onnxruntime" in m["engine"] and "unavailable" in m for m in choice.measured)
    assert sum("engine onnxruntime fp32 left out" in r.message for r in caplog.records) == 1
    # asked for by name: PyTorch FP32 instead, with a warning, never an error
    run, asked = choose_engine(model, x, "onnxruntime", "fp32", tmp_path / "b", CPU, total_rows=10**9)
    assert (asked.engine, asked.precision) == ("torch", "fp32") and "none usable here" in asked.reason
    assert torch.equal(run(x), torch_runner(model, "fp32", CPU)(x))


def test_small_data_or_no_weights_stay_on_pytorch_fp32(tmp_path):
    model, x = small_model(), sample()
    _, choice = choose_engine(model, x, "auto", "auto", tmp_path, CPU, total_rows=100)
    assert (choice.engine, choice.precision) == ("torch", "fp32") and "nothing to gain" in choice.reason
    _, flat = choose_engine(torch.nn.Flatten(), x, "auto", "auto", tmp_path, CPU, total_rows=10**9)
    assert flat.engine == "torch" and "no weights" in flat.reason


def test_the_stage_runs_the_chosen_engine_and_records_it(prepared_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    common = {"backbone": "efficientnet_lite0", "image_size": 32, "num_workers": 0, "batch_size": 16}
    summaries = {}
    for engine in ("torch", "onnxruntime"):
        params = ExtractParams(**common, engine=engine, precision="fp32")
        summaries[engine] = extract_features(
            prepared_dir,
            None,
            tmp_path / engine,
            tmp_path / f"w-{engine}",
            GlobalParams(device="cpu"),
            params,
            tmp_path / "engines",
        )
    assert summaries["onnxruntime"]["engine"]["engine"] == "onnxruntime"
    assert read_features_meta(tmp_path / "onnxruntime")["engine"] == "onnxruntime"
    a, b = read_features(tmp_path / "torch"), read_features(tmp_path / "onnxruntime")
    assert a.ids.tolist() == b.ids.tolist()
    assert np.min(cosines(torch.from_numpy(a.vectors), torch.from_numpy(b.vectors)).numpy()) >= 0.99999


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_int8_is_calibrated_on_the_batch_and_close_to_fp32(engine, tmp_path):
    pytest.importorskip("onnxruntime.quantization")
    pytest.importorskip(engine)
    model, x = small_model(), sample()
    reference = torch_runner(model, "fp32", CPU)(x)
    run = build_runner(engine, "int8", model, x, tmp_path / engine, CPU)
    out = run(x)
    assert out.shape == reference.shape and out.dtype == torch.float32
    assert 0.9 <= cosines(out, reference).min() < 0.999999  # quantised: close, not equal
    assert run(x[:5]).allclose(out[:5], atol=1e-4)
    assert len(list((tmp_path / "int8").glob("model-*.onnx"))) == 1


def test_an_int8_graph_is_kept_per_calibration_batch_and_never_remade_from_other_images(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime.quantization")
    from onnxruntime import quantization

    model, x = small_model(), sample()
    run, choice = choose_engine(model, x, "onnxruntime", "int8", tmp_path, CPU, total_rows=10**9, min_cosine=0.0)
    assert (choice.engine, choice.precision) == ("onnxruntime", "int8") and choice.calibration
    monkeypatch.setattr(quantization, "quantize_static", lambda *a, **k: pytest.fail("quantised again"))
    # predict: other images, the run's graph by its name, no guard
    other = torch.rand_like(x)
    again, same = choose_engine(
        model,
        other,
        "onnxruntime",
        "int8",
        tmp_path,
        CPU,
        16,
        min_cosine=engines.ANY_COSINE,
        calibration=choice.calibration,
    )
    assert same.calibration == choice.calibration and torch.equal(again(x), run(x))
    # on a machine without that graph: PyTorch FP32 with a warning, not a graph calibrated on other images
    _, elsewhere = choose_engine(
        model,
        other,
        "onnxruntime",
        "int8",
        tmp_path / "b",
        CPU,
        16,
        min_cosine=engines.ANY_COSINE,
        calibration="0" * 16,
    )
    assert (elsewhere.engine, elsewhere.precision) == ("torch", "fp32") and "none usable" in elsewhere.reason


def test_min_cosine_is_the_guard(tmp_path):
    pytest.importorskip("onnxruntime.quantization")
    model, x = small_model(), sample()
    _, loose = choose_engine(model, x, "onnxruntime", "auto", tmp_path, CPU, total_rows=10**9, min_cosine=0.5)
    fastest = max(loose.measured[1:], key=lambda m: m["images_per_second"])  # [0]: the PyTorch reference
    assert loose.precision == fastest["precision"] and "0.5" in loose.reason
    assert (loose.calibration is not None) == (loose.precision == "int8")
    int8 = next(m for m in loose.measured if m["precision"] == "int8")["cosine_to_fp32"]
    assert int8 < 1
    between = (int8 + 1) / 2  # above int8's agreement, below FP32's
    _, strict = choose_engine(model, x, "onnxruntime", "auto", tmp_path, CPU, total_rows=10**9, min_cosine=between)
    assert (strict.engine, strict.precision, strict.calibration) == ("onnxruntime", "fp32", None)


def test_auto_tries_int8_only_when_extraction_is_long(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime.quantization")
    model, x = small_model(), sample()
    _, long = choose_engine(model, x, "onnxruntime", "auto", tmp_path, CPU, total_rows=10**9)
    assert "int8" in {m["precision"] for m in long.measured}
    monkeypatch.setattr(engines, "MIN_SECONDS_TO_QUANTIZE", 1e12)  # a run shorter than a calibration pass is worth
    _, short = choose_engine(model, x, "onnxruntime", "auto", tmp_path / "b", CPU, total_rows=10**9)
    assert {m["precision"] for m in short.measured} == {"fp32"}
    _, asked = choose_engine(model, x, "onnxruntime", "int8", tmp_path / "c", CPU, total_rows=10**9, min_cosine=0.0)
    assert asked.precision == "int8"  # asked for by name: tried whatever the length


def test_the_stage_records_the_int8_calibration_that_predict_asks_for(prepared_dir, tmp_path):
    pytest.importorskip("onnxruntime.quantization")
    params = ExtractParams(
        backbone="efficientnet_lite0",
        image_size=32,
        num_workers=0,
        batch_size=16,
        engine="onnxruntime",
        precision="int8",
        min_cosine=0.0,
    )
    extract_features(prepared_dir, None, tmp_path / "f", tmp_path / "w", GlobalParams(device="cpu"), params, tmp_path)
    meta = read_features_meta(tmp_path / "f")
    assert (meta["engine"], meta["precision"]) == ("onnxruntime", "int8")
    assert len(list(tmp_path.glob(f"*/int8/model-{meta['calibration']}.onnx"))) == 1


def test_openvino_runners_dropped_in_any_order_leave_signals_deliverable(tmp_path):
    """Two OpenVINO runners freed first-built-first, then a child's exit handled in Python: with a Core
    per runner the main thread's signal stack pointed at freed memory and the process died of SIGSEGV."""
    pytest.importorskip("openvino")
    script = f"""
import gc, pathlib, signal, subprocess, sys, torch
from imageclust.features.runners import build_runner
from imageclust.models.backbones import build_backbone
model, example = build_backbone("small_cnn", 1, 8, widths=[4, 8]).eval(), torch.rand(4, 1, 8, 8)
first = build_runner("openvino", "fp32", model, example, pathlib.Path({str(tmp_path)!r}) / "a", torch.device("cpu"))
second = build_runner("openvino", "fp32", model, example, pathlib.Path({str(tmp_path)!r}) / "b", torch.device("cpu"))
del first; gc.collect()
del second; gc.collect()
signal.signal(signal.SIGCHLD, lambda *_: None)
subprocess.run([sys.executable, "-c", "pass"], check=True)
print("delivered")
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0 and "delivered" in result.stdout, (result.returncode, result.stderr[-2000:])
