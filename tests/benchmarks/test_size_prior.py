"""benchmarks/size_prior.py: its draws and its count of the classes that keep a cluster."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.size_prior import classes_kept, draw_pair, store_case


def test_classes_kept_counts_classes_mostly_in_their_own_matched_cluster():
    labels = np.array([0] * 10 + [1] * 10 + [2] * 5)
    # class 0 whole in cluster 0; class 1 split 7/3 (70%: not kept); class 2 shares cluster 2 with class 1's rest
    clusters = np.array([0] * 10 + [1] * 7 + [2] * 3 + [2] * 5)
    assert classes_kept(labels, clusters) == 2  # 0, and 2 (all 5 in cluster 2, matched to it)
    assert classes_kept(labels, clusters, share=0.7) == 3


def test_draw_pair_balanced_and_ten_to_one():
    labels = np.repeat(np.arange(10), 200)
    drawn = draw_pair(labels, 150, seed=0)
    assert sorted(np.bincount(labels[drawn["balanced"]])) == [150] * 10
    sizes = sorted(np.bincount(labels[drawn["sizes 10:1"]]), reverse=True)
    assert sizes[0] == 150 and sizes[-1] == 15 and all(a >= b for a, b in zip(sizes, sizes[1:]))


def test_a_case_records_what_method_auto_picks_and_its_regret(monkeypatch):
    """The cluster stage's k-means and each method with auto's prior, judged as finetune.method: auto
    judges them; the regret is against the best of them in hindsight."""
    from benchmarks import size_prior
    from imageclust.clustering.params import ClusterParams

    monkeypatch.setattr(size_prior, "FINETUNE", ("temi",))  # one method keeps the test short
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 30)
    vectors = (np.eye(8)[labels] * 3 + rng.normal(scale=0.5, size=(120, 8))).astype(np.float32)
    row = size_prior.run_case(vectors, labels, ClusterParams(k=4), seed=0)
    accs = {"none": row["kmeans_acc"], "temi": row["temi/auto"]["acc"]}
    for score in size_prior.SCORES:
        auto = row["method_auto"][score]
        assert set(auto["scores"]) == {"none", "temi"} and auto["pick"] == max(auto["scores"], key=auto["scores"].get)
        assert auto["regret"] == round(max(accs.values()) - accs[auto["pick"]], 4)
    scores = row["method_auto"]
    assert scores["both"]["scores"]["temi"] == pytest.approx(
        (scores["neighbour"]["scores"]["temi"] + scores["linear"]["scores"]["temi"]) / 2, abs=1e-4
    )
    table = size_prior.table({"cases": [{"data": "blobs", "case": "balanced", "seed": 0, **row}]})
    cell = ", ".join(f"{scores[s]['pick']} ({scores[s]['regret']:.3f})" for s in size_prior.SCORES)
    assert table.splitlines()[-1].endswith(f"| {cell} |")
    assert row["floor"]["neighbour"]["temi"] in (accs["none"], accs["temi"])
    assert size_prior.long_tail_table({"cases": [{"data": "blobs", "case": "balanced", "seed": 0, **row}]}) == ""


def test_a_case_with_long_tail_ratios_runs_each_and_tables_them(monkeypatch):
    from benchmarks import size_prior
    from imageclust.clustering.params import ClusterParams

    monkeypatch.setattr(size_prior, "FINETUNE", ("temi",))
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), [60, 30, 15, 8])
    vectors = (np.eye(8)[labels] * 3 + rng.normal(scale=0.5, size=(len(labels), 8))).astype(np.float32)
    row = size_prior.run_case(vectors, labels, ClusterParams(k=4), seed=0, long_tail=(3.0, 10.0))
    assert set(row["temi/long_tail:3"]) == {"acc", "classes_kept"} and 0 <= row["temi/long_tail:10"]["acc"] <= 1
    lines = size_prior.long_tail_table({"cases": [{"data": "blobs", "case": "sizes 10:1", "seed": 0, **row}]})
    header, _, last = lines.splitlines()
    assert header.endswith("| k-means | temi auto | temi long_tail 3 | temi long_tail 10 |")
    cell = f"{row['temi/long_tail:10']['acc']:.3f} ({row['temi/long_tail:10']['classes_kept']})"
    assert last.endswith(f"| {cell} |")


def test_the_floor_by_each_score_by_hand():
    from benchmarks import size_prior

    candidates = {
        "none": (0.70, {"neighbour": 0.95, "linear": 0.99}),
        "scan": (0.80, {"neighbour": 0.97, "linear": 0.90}),  # better by neighbours, worse linearly
        "temi": (0.60, {"neighbour": 0.95, "linear": 0.98}),  # a tie keeps the method's own
    }
    assert size_prior.floored(candidates, "neighbour") == {"scan": 0.80, "temi": 0.60}
    assert size_prior.floored(candidates, "linear") == {"scan": 0.70, "temi": 0.70}


def test_store_case_replaces_the_same_case_and_keeps_the_others(tmp_path):
    out = tmp_path / "report.json"
    report = {"cases": [{"data": "a", "case": "balanced", "seed": 0, "acc": 0.1}]}
    store_case(report, out, {"data": "b", "case": "balanced", "seed": 0, "acc": 0.2})
    store_case(report, out, {"data": "a", "case": "balanced", "seed": 0, "acc": 0.3})
    stored = json.loads(out.read_text())["cases"]
    assert [(case["data"], case["acc"]) for case in stored] == [("b", 0.2), ("a", 0.3)]
