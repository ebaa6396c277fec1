"""More representation spaces (``extract.spaces``): the features of further frozen backbones, or of
one backbone at another resolution, beside the extract stage's own.

Each space is a feature folder like the extract stage's (parquet shards and ``_meta.json``, the same
rows in the same order), named, under one folder whose ``spaces.json`` lists them. TURTLE fits one
head per space, the extract stage's first; every other method uses the extract stage's features.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..io import atomic_dir, write_json
from ..tables import SPACES_INDEX
from .stage import extract_features

log = logging.getLogger(__name__)


def extract_spaces(prepared_dir, out_dir, work_dir, gparams, params, engines_dir=None) -> dict:
    """Extract every space of ``params.spaces`` into ``out_dir/<name>/`` and write the index, all
    swapped into place as one folder. A killed run resumes the space it was extracting (its finished
    shards stay in ``work_dir/<name>/``)."""
    spaces = {}
    Path(work_dir).mkdir(parents=True, exist_ok=True)  # a DVC output, even with no space
    with atomic_dir(out_dir) as tmp:
        for space in params.spaces:
            log.info("space %r: %s at %s px", space.label, space.backbone, space.image_size or "its own")
            summary = extract_features(
                prepared_dir,
                None,  # a space is a frozen backbone: no encoder
                tmp / space.label,
                Path(work_dir) / space.label,
                gparams,
                params.for_space(space),
                engines_dir,
                stage="extract_spaces",
            )
            spaces[space.label] = summary
        index = [
            {"name": name, "backbone": s["backbone"], "input_size": s["input_size"], "dim": s["dim"]}
            for name, s in spaces.items()
        ]
        write_json(tmp / SPACES_INDEX, {"spaces": index})
    return {
        "spaces": len(spaces),
        "rows": next(iter(spaces.values()))["rows"] if spaces else 0,
        "dims": {name: s["dim"] for name, s in spaces.items()},
        "seconds": round(sum(s["seconds"] for s in spaces.values()), 3),
        "per_space": spaces,
    }
