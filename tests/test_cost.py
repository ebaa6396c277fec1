import time

import numpy as np
import pytest

from imageclust import cost
from imageclust.cli import write_metrics
from imageclust.io import read_json


def test_measure_counts_from_start_and_sees_the_peak_memory():
    cost.start()
    time.sleep(0.2)  # the seconds are rounded to 0.01: long enough for images/s to agree within 5%
    before = cost.measure()
    big = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    after = cost.measure(images=1000)
    assert before["seconds"] >= 0.2 and after["seconds"] >= before["seconds"]
    assert after["peak_memory_mib"] >= before["peak_memory_mib"] and after["peak_memory_mib"] >= 64
    assert after["images"] == 1000 and after["images_per_s"] == pytest.approx(1000 / after["seconds"], rel=0.05)
    assert "images" not in before and big.sum() > 0


def test_write_metrics_puts_the_cost_beside_the_summary(tmp_path):
    cost.start()
    write_metrics(tmp_path / "m.json", {"k": 3}, images=10)
    written = read_json(tmp_path / "m.json")
    assert written["k"] == 3 and set(written["cost"]) >= {"seconds", "peak_memory_mib", "images", "images_per_s"}
