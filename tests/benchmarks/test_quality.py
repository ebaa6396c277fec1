"""The quality benchmark's summary: means and worst seeds, methods that could not run, the table of docs/results.md."""

import pytest

from benchmarks import quality


def _run(seed: int, kmeans: float, scan: float) -> dict:
    stage = {"seconds": 60.0, "peak_mib": 1000 + seed}
    return {
        "seed": seed,
        "stages": {s: stage for s in quality.STAGES},
        "linear_probe": {"linear_probe_acc": 0.99},
        "methods": {
            "kmeans": {"acc": kmeans, "nmi": 0.5, "ari": 0.4},
            "scan": {"acc": scan, "nmi": 0.8, "ari": 0.7, "finetune": {"seconds": 120.0}},
            "deepcluster": {"not_run": "deepcluster trains the encoder"},
        },
    }


def test_summary_rows_average_the_seeds_and_keep_the_worst():
    report = {"machine": {}, **{f"mnist/seed{s}": _run(s, 0.90 + s / 100, 0.995 - s / 200) for s in (0, 1, 2)}}
    rows = {row[2]: row for row in quality.summary_rows(report)}
    assert rows["scan"][3:9] == ["0.990 (target met)", "0.985", "0.990", "0.800", "0.700", "0, 1, 2"]
    assert rows["kmeans"][3] == "0.910" and rows["kmeans"][4] == "0.900" and rows["kmeans"][5] == "0.990"
    shared = len(quality.STAGES) - 1  # every stage but finetune, a minute each
    assert rows["scan"][9] == f"{shared:.1f} + 2.0 min" and rows["scan"][10] == "1,002 MiB"
    del report["mnist/seed2"]  # a target counts over every seed the configuration names
    assert next(row for row in quality.summary_rows(report) if row[2] == "scan")[3] == "0.992"
    assert rows["deepcluster"][3] == "not run: deepcluster trains the encoder"


def test_results_table_is_replaced_between_the_markers(tmp_path):
    readme = tmp_path / "results.md"
    readme.write_text(
        f"intro\n{quality.BEGIN}\nold table\n{quality.END}\n{quality.AUTO_BEGIN}\nold\n{quality.AUTO_END}\nafter\n"
    )
    quality.write_results_table({"digits/seed0": _run(0, 0.95, 0.99)}, readme)
    text = readme.read_text()
    assert "old table" not in text and text.startswith("intro\n") and text.endswith(f"{quality.AUTO_END}\nafter\n")
    assert "| digits | defaults | scan | 0.990 | 0.990 |" in text  # one seed of five: no target is met


def test_missing_markers_stop_with_a_message(tmp_path):
    readme = tmp_path / "results.md"
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        quality.write_results_table({}, readme)


def test_digits_target_needs_the_worst_seed_too():
    report = {f"digits/seed{s}": _run(s, 0.95, acc) for s, acc in enumerate((1.0, 1.0, 0.975))}
    scan = next(row for row in quality.summary_rows(report) if row[2] == "scan")
    assert scan[3] == "0.992" and scan[4] == "0.975"  # mean above 0.99, worst seed below 0.98


def test_every_choice_automatic_is_set_beside_the_best_fixed_method_on_the_same_seeds():
    runs = {f"mnist/seed{s}": _run(s, 0.97, 0.98) for s in (0, 1, 2)}
    runs["mnist/seed0"]["automatic"] = {"neighbour": {"acc": 0.976, "k": 10, "method": "turtle"}}
    runs["mnist/seed1"]["automatic"] = {"neighbour": {"acc": 0.95, "k": 9, "method": "none"}}
    runs["mnist/seed1"]["methods"]["scan"]["acc"] = 0.96  # seed 2 has no automatic run: left out of the means
    (row,) = quality.automatic_rows(runs)
    assert row[2:6] == ["neighbour", "0, 1", "10, 9", "turtle, none"]
    assert row[6:] == ["0.963", "0.950", "kmeans 0.970", "+0.007 (bar met)"]
    runs["mnist/seed1"]["automatic"]["neighbour"]["acc"] = 0.90
    assert quality.automatic_rows(runs)[0][-1] == "+0.032"  # more than the 0.01: no mention of the bar
    runs["mnist/seed0"]["automatic"]["both"] = {"acc": 0.98, "k": 10, "method": "scan"}  # a row per score
    assert [row[2:4] for row in quality.automatic_rows(runs)] == [["neighbour", "0, 1"], ["both", "0"]]
    assert quality.automatic_rows({"mnist/seed2": runs["mnist/seed2"]}) == []


def test_settings_are_read_as_dvc_reads_them():
    assert quality.parse_setting("finetune.auto.candidates=[none, temi]")[1] == ["none", "temi"]
    assert quality.parse_setting("cluster.k=auto") == ("cluster.k", "auto")
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        quality.parse_setting("cluster.k")


def test_the_stages_run_are_dvc_yamls_in_its_order():
    """A stage added to dvc.yaml (extract_spaces, which finetune reads) is run by the benchmarks too."""
    from benchmarks.common import stages_through

    assert quality.STAGES == stages_through("evaluate")
    assert quality.STAGES.index("extract") < quality.STAGES.index("extract_spaces") < quality.STAGES.index("finetune")
    assert stages_through("plot")[-1] == "plot" and "export" in stages_through("plot")
