"""Contact sheets: the images of each cluster, most confident first, for a person to look at.

A sheet is composed as a pixel array, not a plot: each image becomes a square tile, scaled by
nearest-neighbour sampling when it is small (digits stay sharp) and by area averaging when it is
large. When the true classes are known, a tile whose class is not its cluster's matched class gets
a red frame, so a reader sees a cluster's mistakes at a glance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..io import atomic_path
from ..metrics import NOISE, hungarian_match
from ..tables import UNLABELED

GAP = 2  # pixels between tiles
FRAME = 2  # pixels of the red frame of a tile whose class is not its cluster's
BACKGROUND = (255, 255, 255)
MISMATCH = (220, 30, 30)
TEXT = (20, 20, 20)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # scalable when Pillow has FreeType
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def tiles(images: np.ndarray, side: int) -> np.ndarray:
    """``(n, side, side, 3)`` uint8 RGB tiles of uint8 ``(n, h, w, c)`` images (square images; others are padded)."""
    out = np.empty((len(images), side, side, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).convert("RGB")
        # pad to a square around the centre so that nothing is cut off
        longest = max(pil.size)
        if pil.size[0] != pil.size[1]:
            square = Image.new("RGB", (longest, longest), BACKGROUND)
            square.paste(pil, ((longest - pil.size[0]) // 2, (longest - pil.size[1]) // 2))
            pil = square
        resample = Image.Resampling.NEAREST if longest <= side else Image.Resampling.BOX
        out[i] = np.asarray(pil.resize((side, side), resample))
    return out


def grid(tile_array: np.ndarray, columns: int, framed: np.ndarray | None = None) -> np.ndarray:
    """Tiles laid out row by row, ``GAP`` pixels apart; ``framed`` tiles get a red frame."""
    n, side = len(tile_array), tile_array.shape[1]
    rows = max(1, -(-n // columns))
    step = side + GAP
    canvas = np.full((rows * step - GAP, columns * step - GAP, 3), BACKGROUND, dtype=np.uint8)
    for i in range(n):
        top, left = (i // columns) * step, (i % columns) * step
        canvas[top : top + side, left : left + side] = tile_array[i]
        if framed is not None and framed[i]:
            bottom, right = top + side, left + side
            for edge in (
                np.s_[top : top + FRAME, left:right],
                np.s_[bottom - FRAME : bottom, left:right],
                np.s_[top:bottom, left : left + FRAME],
                np.s_[top:bottom, right - FRAME : right],
            ):
                canvas[edge] = MISMATCH
    return canvas


def _with_header(body: np.ndarray, lines: list[str], font_size: int = 14) -> Image.Image:
    font = _font(font_size)
    line_height = font_size + 6
    header = line_height * len(lines) + 6
    width = max(body.shape[1], 8 + max((int(font.getlength(line)) for line in lines), default=0))
    image = Image.new("RGB", (width + 8, body.shape[0] + header + 4), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((4, 4 + i * line_height), line, fill=TEXT, font=font)
    image.paste(Image.fromarray(body), (4, header))
    return image


def _stack(parts: list[Image.Image], separator: int = 10) -> Image.Image:
    width = max(p.size[0] for p in parts)
    height = sum(p.size[1] for p in parts) + separator * (len(parts) - 1)
    out = Image.new("RGB", (width, height), BACKGROUND)
    top = 0
    for part in parts:
        out.paste(part, (0, top))
        top += part.size[1] + separator
    return out


def save_png(image: Image.Image, path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", optimize=True)


@dataclass
class ClusterView:
    """One cluster's members (rows of the assignments), most confident first, and how it matches the classes."""

    cluster: int
    rows: np.ndarray
    name: str  # "cluster 3", with its matched class when labels exist
    mismatched: np.ndarray  # per row: its true class is known and is not the cluster's matched class
    share: float | None  # fraction of its labelled members in the matched class


def cluster_views(
    clusters: np.ndarray, confidence: np.ndarray, labels: np.ndarray, class_names: list[str]
) -> list[ClusterView]:
    """Every cluster (noise last) with its members sorted by decreasing confidence (ties: by row)."""
    clusters, labels = np.asarray(clusters), np.asarray(labels)
    labelled = labels != UNLABELED
    mapping = hungarian_match(labels[labelled], clusters[labelled]) if labelled.any() else {}
    order = np.lexsort((np.arange(len(clusters)), -np.asarray(confidence, dtype=np.float64)))
    views = []
    for cluster in sorted(np.unique(clusters).tolist(), key=lambda c: (c == NOISE, c)):
        rows = order[clusters[order] == cluster]
        matched = mapping.get(cluster)
        name = "noise" if cluster == NOISE else f"cluster {cluster}"
        known = labelled[rows]
        if matched is not None:
            name += f" ({class_names[matched]})"
            mismatched = known & (labels[rows] != matched)
            share = float((known.sum() - mismatched.sum()) / known.sum())
        else:
            mismatched = known & labelled.any() & (cluster != NOISE)  # unmatched cluster: no member is right
            share = 0.0 if known.any() and cluster != NOISE else None
        views.append(ClusterView(int(cluster), rows, name, mismatched, share))
    return views


def cluster_sheet(view: ClusterView, images, confident: int, uncertain: int, columns: int, side: int) -> Image.Image:
    """The ``confident`` most confident members of one cluster, then its ``uncertain`` least confident."""
    top = view.rows[:confident]
    rest = view.rows[confident:]
    bottom = rest[-uncertain:] if uncertain else rest[:0]
    title = f"{view.name}: {len(view.rows)} images"
    if view.share is not None:
        title += f", {view.share:.0%} of the labelled in its matched class (red frame: another class)"
    parts = [
        _with_header(
            grid(tiles(images(top), side), columns, view.mismatched[:confident]), [title, f"most confident {len(top)}"]
        )
    ]
    if len(bottom):
        framed = view.mismatched[len(view.rows) - len(bottom) :]
        parts.append(
            _with_header(grid(tiles(images(bottom), side), columns, framed), [f"least confident {len(bottom)}"])
        )
    return _stack(parts)


def overview_sheet(views: list[ClusterView], images, per_cluster: int, side: int) -> Image.Image:
    """One row per cluster: its name, size and ``per_cluster`` most confident images."""
    font_size = 13
    label_width = 8 + max(int(_font(font_size).getlength(f"{v.name}  n={len(v.rows)}")) for v in views)
    rows = []
    for view in views:
        picked = view.rows[:per_cluster]
        body = grid(tiles(images(picked), side), per_cluster, view.mismatched[:per_cluster])
        row = Image.new("RGB", (label_width + body.shape[1], side), BACKGROUND)
        ImageDraw.Draw(row).text(
            (2, max(0, side // 2 - font_size // 2)),
            f"{view.name}  n={len(view.rows)}",
            fill=TEXT,
            font=_font(font_size),
        )
        row.paste(Image.fromarray(body), (label_width, 0))
        rows.append(row)
    return _stack(rows, separator=GAP * 2)


def tile_side(image_side: int, target: int = 64) -> int:
    """Tile size: small images scaled up by a whole factor to about ``target`` pixels, large ones down to it."""
    if image_side >= target:
        return target
    return image_side * max(1, round(target / image_side))
