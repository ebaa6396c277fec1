"""The validation suite of cluster.k: auto: its cases hold the answers they claim, and its table
reports what each criterion picked."""

import json

import numpy as np
import yaml

from benchmarks import choose_k
from imageclust.tables import FeatureTable, write_features


def _ten_blobs(per_class=60, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class)
    centres = np.eye(10, 16) * 6
    centres[1] = centres[0] + 1.0  # classes 0 and 1 lie closest together (4 apart): the pair merged first
    return labels, (centres[labels] + rng.normal(size=(len(labels), 16))).astype(np.float32)


def test_cases_hold_their_classes_merges_and_size_ratios():
    labels, vectors = _ten_blobs()
    cases = {case.name: case for case in choose_k.build_cases(vectors, labels, case_size=300, seed=0)}
    assert [c.k for c in cases.values()] == [3, 5, 7, 10, 8, 10, 5]
    merged = next(c for name, c in cases.items() if "merged" in name)
    assert "1+0" in merged.name  # the closest pair
    assert len(merged.rows) == 300 and len(set(merged.rows)) == 300
    for name in ("10 classes, sizes 10:1", "5 classes, sizes 10:1"):
        sizes = np.bincount(cases[name].labels)
        assert cases[name].imbalanced and sizes.max() / sizes.min() >= 9.0
        assert len(cases[name].rows) <= 300
    for case in cases.values():  # the renumbered classes follow the original ones, row by row
        original = labels[case.rows]
        assert len(np.unique(np.stack([original, case.labels]), axis=1).T) == len(np.unique(original))


def test_command_scores_each_criterion_against_the_right_k(tmp_path):
    labels, vectors = _ten_blobs(per_class=40)
    n = len(labels)
    table = FeatureTable(
        np.array([f"s{i}" for i in range(n)], dtype=object), np.array(["train"] * n, dtype=object), labels, vectors
    )
    write_features(tmp_path / "p" / "artifacts" / "features", table, {})
    (tmp_path / "p" / "params.yaml").write_text(
        yaml.safe_dump({"cluster": {"method": "kmeans", "kmeans": {"n_init": 2}}})
    )
    out = tmp_path / "choose_k.json"
    choose_k.main(["--data", f"blobs={tmp_path / 'p'}", "--criteria", "silhouette", "eigengap",
                   "--case-size", "200", "--max-k", "12", "--out", str(out)])  # fmt: skip
    report = json.loads(out.read_text())
    cases = report["datasets"]["blobs"]
    assert len(cases) == 7
    for case in cases:
        assert set(case["picks"]) == {"silhouette", "eigengap"}
        assert 2 <= case["picks"]["silhouette"]["k"] <= 12 and 0 < case["acc_at_true_k"] <= 1
    balanced = [c for c in cases if not c["imbalanced"] and "merged" not in c["case"]]
    assert all(c["picks"]["silhouette"]["k"] == c["true_k"] for c in balanced)  # well-separated blobs
    summary = report["summary"]["silhouette"]
    assert summary["cases"] == 7 and summary["right"] >= 4 / 7
    text = choose_k.table(report)
    assert "| `silhouette` |" in text and "| blobs | 3 classes | 3 |" in text


def _stored_case(true_k, curves):
    picks = {}
    for name, curve in curves.items():
        best = min if choose_k.BEST[name] == "min" else max
        picks[name] = {"k": best(curve, key=curve.get), "curve": {str(k): v for k, v in curve.items()}}
    return {"true_k": true_k, "picks": picks}


def test_combined_pick_rescales_each_curve_and_respects_its_direction():
    # stability is lowest-best, silhouette highest-best; rescaled, K=4 sums 0.9 + 0.75 against 1.0 + 0 and 0 + 1.0
    case = _stored_case(4, {"stability": {3: 0.0, 4: 0.1, 5: 1.0}, "silhouette": {3: 0.2, 4: 0.8, 5: 1.0}})
    assert case["picks"]["stability"]["k"] == 3 and case["picks"]["silhouette"]["k"] == 5
    assert choose_k.combined_pick(case, ["stability", "silhouette"], "mean") == 4
    assert choose_k.combined_pick(case, ["stability", "silhouette"], "median") == 3  # the lower middle pick


def test_combinations_score_every_pair_and_triple_on_the_stored_cases(tmp_path):
    right = _stored_case(
        4, {"stability": {3: 0.5, 4: 0.1}, "silhouette": {3: 0.1, 4: 0.9}, "generalisation": {3: 0.2, 4: 0.3}}
    )
    wrong = _stored_case(
        3, {"stability": {3: 0.5, 4: 0.1}, "silhouette": {3: 0.1, 4: 0.9}, "generalisation": {3: 0.2, 4: 0.3}}
    )
    report = {"datasets": {"a": [right], "b": [wrong]}}
    rows = choose_k.combinations(report, ["stability", "silhouette", "generalisation"])
    assert len(rows) == 2 * (3 + 1)  # three pairs and one triple, two rules each
    assert all(r["right"] == 0.5 and r["within_one"] == 1.0 for r in rows)
    out = tmp_path / "choose_k.json"
    out.write_text(json.dumps({**report, "summary": {}}))
    choose_k.main(["--combine", "--out", str(out)])
    assert len(json.loads(out.read_text())["combinations"]) == 8
