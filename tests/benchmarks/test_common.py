"""The loop every end-to-end benchmark shares."""

import json
import sys

from benchmarks import common


def test_a_run_records_the_commit_it_cloned_not_the_one_head_moved_to(tmp_path, monkeypatch):
    head = {"commit": "before"}
    monkeypatch.setattr(common, "head_commit", lambda: head["commit"])

    def run(workdir):
        head["commit"] = "after"  # a commit lands while the run is under way
        return {"acc": 0.5}

    out = tmp_path / "results.json"
    out.write_text(json.dumps({"other/seed0": {"commit": "kept"}}))
    monkeypatch.setattr(sys, "argv", ["bench", "--out", str(out), "--workdir", str(tmp_path / "work")])
    common.run_benchmarks("test", {"one/seed0": run})
    report = json.loads(out.read_text())
    assert report["one/seed0"] == {"commit": "before", "acc": 0.5}
    assert report["other/seed0"] == {"commit": "kept"}  # other runs' results are merged, not dropped
