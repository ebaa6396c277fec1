"""What a user with a large folder keeps: the report's size, whether a browser shows every picture
offline, and what one `dvc exp run` leaves for git.

A folder of photo-sized JPEGs (CIFAR-10 test images upscaled to 500 x 375, 10 classes; made once
by ``extract_speed.photo_folder``) goes through the ``photos_frozen`` preset in a fresh clone
(``finetune.method=none``: the report's size does not depend on the method, and the run stays a few
minutes). Measured: ``report/report.html``'s size and its largest embedded pictures, headless
Chromium's count of decoded and broken pictures, and every file that the experiment changed for
git with its size.

    python benchmarks/report_size.py --out benchmarks/results/report_size.json [--images 10000]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import clone, dvc_env, head_commit  # noqa: E402
from benchmarks.extract_speed import photo_folder  # noqa: E402

GIT_LIMIT = 512 * 1024
REPORT_LIMIT = 3 * 1024 * 1024


def chromium_counts(page: Path) -> dict:
    """Pictures headless Chromium decoded and failed to decode (the report records both on <body>)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        return {"browser": None}
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        + ["--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    body = re.search(r"<body[^>]*>", dom)
    found = {k: int(v) for k, v in re.findall(r'data-images-(loaded|broken)="(\d+)"', body.group(0) if body else "")}
    return {
        "browser": Path(browser).name,
        "pictures_loaded": found.get("loaded"),
        "pictures_broken": found.get("broken"),
    }


def embedded_pictures(page: Path) -> list[dict]:
    pictures = re.findall(r'<img alt="([^"]*)" src="data:([^;]+);base64,([^"]*)"', page.read_text())
    return [{"picture": alt, "type": mime, "kib": round(len(data) * 3 / 4 / 1024)} for alt, mime, data in pictures]


def measure(project: Path, photos: Path) -> dict:
    started = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "imageclust.preset", "photos_frozen"]
        + ["-S", "data.name=image_folder", "-S", f"data.root={photos}", "-S", "finetune.method=none"],
        cwd=project,
        env=dvc_env(),
        capture_output=True,
        text=True,
    )
    if run.returncode:
        sys.exit(f"the preset failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    seconds = time.perf_counter() - started
    page = project / "report/report.html"
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=project, capture_output=True, text=True
    ).stdout
    changed = {
        line[3:]: (project / line[3:]).stat().st_size for line in status.splitlines() if (project / line[3:]).is_file()
    }
    pictures = embedded_pictures(page)
    evaluated = json.loads((project / "metrics/evaluate.json").read_text())["finetune"]["all"]
    return {
        "seconds": round(seconds),
        "images": evaluated["n"],
        "clusters": evaluated["clusters_nonempty"],
        "report_mib": round(page.stat().st_size / 2**20, 2),
        "report_under_3_mib": page.stat().st_size < REPORT_LIMIT,
        "pictures": len(pictures),
        "jpeg_pictures": sum(p["type"] == "image/jpeg" for p in pictures),
        "largest_pictures": sorted(pictures, key=lambda p: -p["kib"])[:3],
        **chromium_counts(page),
        "git_changed_files": len(changed),
        "git_largest_changed": max(changed.items(), key=lambda kv: kv[1], default=(None, 0)),
        "git_files_over_512_kib": sorted(name for name, size in changed.items() if size > GIT_LIMIT),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--photos", type=Path, help="the photo folder, made there when missing (default: temporary)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        photos = args.photos or Path(tmp) / "photos"
        if not photos.is_dir():
            photo_folder(photos, args.images)
        result = {"commit": head_commit(), "photo_size": [500, 375], **measure(clone(Path(tmp), "project"), photos)}
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
