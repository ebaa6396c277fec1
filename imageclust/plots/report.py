"""One self-contained HTML page per run: the metrics, then every picture of the plot stage.

Pictures are embedded as base64 ``data:`` URIs and the style is inline, so the page opens offline,
from an e-mail attachment or a CI artifact, with nothing to fetch. A picture of images (a contact
sheet, the map with images) is embedded as a JPEG when that is less than half its PNG, which keeps
the page of a folder of photos to a few megabytes; charts stay PNG, sharp. A few lines of script record in
the page itself how many pictures the browser decoded (``data-images-loaded`` and
``data-images-broken`` on ``<body>``), which the tests read back from headless Chromium.
"""

from __future__ import annotations

import base64
import html
import io
import json
import numbers
from pathlib import Path

from PIL import Image

from ..io import atomic_path
from ..labelfree import finetune_notes, k_warning, size_warning

# the scores people look for first, with readable headers; every score is in the table folded below
HEADLINE_SCORES = {
    "acc": "ACC",
    "nmi": "NMI",
    "ari": "ARI",
    "n": "images",
    "clusters_nonempty": "clusters",
    "cluster_size_max": "largest",
    "cluster_size_min": "smallest",
    "silhouette": "silhouette",
}
# evaluate.json's columns in this order in the full table; others follow alphabetically
SCORE_COLUMNS = (
    "n",
    "n_labeled",
    "acc",
    "nmi",
    "ari",
    "acc_many_to_one",
    "silhouette",
    "davies_bouldin",
    "calinski_harabasz",
    "mean_confidence",
    "clusters_nonempty",
    "cluster_size_min",
    "cluster_size_max",
)
JPEG_QUALITY = 85
JPEG_GAIN = 0.5  # a picture is embedded as JPEG only when that takes at most this share of its PNG

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
.wide { max-width: 100%; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f0f0; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
details summary { cursor: pointer; font-weight: 600; margin: 0.5em 0; }
.warning { background: #fff3cd; border-left: 4px solid #e0a800; padding: 0.5em 1em; }
.note { background: #e7f1ff; border-left: 4px solid #0d6efd; padding: 0.5em 1em; }
"""

# count the pictures the browser decoded; the tests of the report read the result off <body>
SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.from(document.images);
  var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.imagesLoaded = loaded;
  document.body.dataset.imagesBroken = images.length - loaded;
});
"""


def _format(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, numbers.Integral):
        return str(value)
    if isinstance(value, numbers.Real):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_format(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def scores_table(evaluate: dict, headline: bool = False) -> str:
    """``{source: {split: scores}}`` (the evaluate stage's JSON) as one row per source and split:
    every score under its key, or with ``headline`` the few of ``HEADLINE_SCORES`` under readable names."""
    keys = {key for splits in evaluate.values() for scores in splits.values() for key in scores}
    if headline:
        columns = [c for c in HEADLINE_SCORES if c in keys]
        header = [HEADLINE_SCORES[c] for c in columns]
    else:
        header = columns = [c for c in SCORE_COLUMNS if c in keys] + sorted(keys - set(SCORE_COLUMNS))
    rows = [
        [f"{source} / {split}", *(scores.get(c, "") for c in columns)]
        for source, splits in evaluate.items()
        for split, scores in splits.items()
    ]
    return _table(["clusters / split", *header], rows)


def stage_table(name: str, metrics: dict) -> str:
    """A stage's metrics JSON as key-value rows (nested keys joined with dots)."""
    rows = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            rows.append([prefix, value])

    walk("", metrics)
    return _table([name, "value"], rows)


def embedded_picture(path: Path) -> tuple[str, bytes]:
    """``(MIME type, bytes)`` to embed a PNG: the file itself, or a JPEG of it when that is much smaller
    (pictures of photos), so that the page stays small without blurring the text of charts."""
    png = Path(path).read_bytes()
    with Image.open(io.BytesIO(png)) as image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    jpeg = buffer.getvalue()
    return ("image/jpeg", jpeg) if len(jpeg) <= JPEG_GAIN * len(png) else ("image/png", png)


def _image(path: Path, alt: str) -> str:
    mime, data = embedded_picture(path)
    return f'<img alt="{html.escape(alt)}" src="data:{mime};base64,{base64.b64encode(data).decode("ascii")}">'


def write_report(
    path: str | Path,
    title: str,
    metrics: dict[str, dict],
    figures: list[tuple[str, Path, str]],
    sheets: list[tuple[str, Path]],
) -> None:
    """``metrics``: stage name -> its metrics JSON (``evaluate`` gets the scores table); ``figures``:
    ``(heading, png, caption)``; ``sheets``: ``(cluster name, png)``, shown folded under one heading."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if "evaluate" in metrics:
        parts += [
            "<h2>Scores</h2>",
            scores_table(metrics["evaluate"], headline=True),
            '<details><summary>every score</summary><div class="wide">'
            f"{scores_table(metrics['evaluate'])}</div></details>",
        ]
    for name, m in metrics.items():  # label-free flags of a degenerate clustering
        warnings = [size_warning(m["cluster_sizes"]) if isinstance(m.get("cluster_sizes"), dict) else None]
        if m.get("k_auto"):
            warnings.append(k_warning(m["k"], m.get("k_runner_up"), m.get("k_margin")))
        for warning in filter(None, warnings):
            parts.append(f'<p class="warning">{html.escape(name)}: {html.escape(warning)}</p>')
        parts += [f'<p class="note">{html.escape(name)}: {html.escape(note)}</p>' for note in finetune_notes(m)]
    others = [(name, m) for name, m in metrics.items() if name != "evaluate"]
    if others:
        parts.append("<h2>Stages</h2>")
        parts += [
            f"<details><summary>{html.escape(name)}</summary>{stage_table(name, m)}</details>" for name, m in others
        ]
    for heading, png, caption in figures:
        parts.append(
            f"<h2>{html.escape(heading)}</h2><figure>{_image(png, heading)}"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    if sheets:
        parts.append("<h2>Every cluster</h2>")
        parts += [
            f"<details><summary>{html.escape(name)}</summary><figure>{_image(png, name)}</figure></details>"
            for name, png in sheets
        ]
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style><script>{SCRIPT}</script></head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
    with atomic_path(path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
