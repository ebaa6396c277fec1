"""Inference engines: each gives PyTorch FP32's features, a missing one is left out with a log line,
the exported graph and the choice are reused on a rerun, and the stage records what it ran."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from imageclust.config import GlobalParams
from imageclust.features import engines
from imageclust.features.engines import MIN_COSINE, build_runner, choose_engine, cpu_has_bf16, torch_runner
from imageclust.features.params import ExtractParams
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
    assert json.loads((folder / "choice-auto-auto.json").read_text())["engine"] == choice.engine

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
