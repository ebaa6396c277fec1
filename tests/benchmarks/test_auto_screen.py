"""The screen benchmark: auto on a project's features once per screen size, each run's pick, scores and
ACC in the JSON and the docs' table."""

import json

from fakes import blob_project

from benchmarks import auto_screen


def test_auto_once_per_screen_size(tmp_path, monkeypatch):
    blob_project(tmp_path, {"seed": 0, "data": {"train_splits": ["train"]}}, n_per=100)  # 225 training rows
    out, docs = tmp_path / "auto_screen.json", tmp_path / "results.md"
    docs.write_text("before\n<!-- auto_screen:begin -->\n<!-- auto_screen:end -->\nafter\n")
    monkeypatch.setattr(auto_screen, "DOCS", docs)
    argv = ["--run", f"blobs={tmp_path}", "--candidates", "none", "temi", "--screen-rows", "200", "none"]
    auto_screen.main([*argv, "--out", str(out), "--docs"])
    runs = json.loads(out.read_text())["datasets"]["blobs"]
    assert [r["screen_rows"] for r in runs] == [200, None] and {r["train_rows"] for r in runs} == {225}
    assert all(r["chosen"] == "temi" and r["acc"] > 0.6 for r in runs)
    assert all(set(r["candidate_scores"]) == {"none", "temi"} for r in runs)
    text = docs.read_text()
    assert "| blobs | 200 | temi |" in text and "| blobs | all (no screen) | temi |" in text
    assert text.endswith("after\n")
