"""More representation spaces (``extract.spaces``): the features of further frozen backbones, or of
one backbone at another resolution, beside the extract stage's own; and the referee spaces
(``extract.referees``, ``referees.py``) that ``finetune.method: auto`` judges its candidates in.

Each space is a feature folder like the extract stage's (parquet shards and ``_meta.json``, the same
rows in the same order), named, under one folder whose ``spaces.json`` lists them. TURTLE fits one
head per space, the extract stage's first; every other method uses the extract stage's features. Each
referee is a features folder of a sample of the training rows under ``referees/``, listed in
``spaces.json`` too.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path

from ..data.prepared import DEFAULT_TRAIN_SPLITS, load_prepared
from ..io import atomic_dir, write_json
from ..runtime import init_distributed, resolve_device
from ..tables import REFEREES_FOLDER, SPACES_INDEX
from .engines import default_cache_dir
from .referees import extract_referees, referee_rows
from .stage import extract_features

log = logging.getLogger(__name__)


def extract_spaces(
    prepared_dir, out_dir, work_dir, gparams, params, engines_dir=None, train_splits: list[str] | None = None
) -> dict | None:
    """Extract every space of ``params.spaces`` into ``out_dir/<name>/`` and every referee of
    ``params.referees`` (a sample of the ``train_splits`` rows) into ``out_dir/referees/<name>/``, and
    write the index, all swapped into place as one folder. A killed run resumes the space it was
    extracting (its finished shards stay in ``work_dir/<name>/``). Under ``torchrun`` every process
    extracts its share of each space's shards and the first publishes them and embeds the referees'
    few rows; the others return None."""
    ddp = init_distributed()
    spaces = {}
    prepared = load_prepared(prepared_dir) if params.referees else None
    # drawn first: a split the data lacks stops the stage before any space is extracted
    rows = None if prepared is None else referee_rows(prepared, train_splits or list(DEFAULT_TRAIN_SPLITS))
    Path(work_dir).mkdir(parents=True, exist_ok=True)  # a DVC output, even with no space
    # only the first process writes the output; the others' share goes through the work folder
    with atomic_dir(out_dir) if ddp.is_main else nullcontext(None) as tmp:
        for space in params.spaces:
            log.info("space %r: %s at image_size %s", space.label, space.backbone, space.image_size or "null (its own)")
            summary = extract_features(
                prepared_dir,
                None,  # a space is a frozen backbone: no encoder
                tmp / space.label if tmp is not None else None,
                Path(work_dir) / space.label,
                gparams,
                params.for_space(space),
                engines_dir,
                stage="extract_spaces",
                ddp=ddp,
            )
            spaces[space.label] = summary
        referees = []
        if ddp.is_main:
            if prepared is not None:
                device = resolve_device(gparams.device, ddp.local_rank)
                referees = extract_referees(
                    prepared, rows, tmp / REFEREES_FOLDER, params, device, engines_dir or default_cache_dir()
                )
            index = [
                {"name": name, "backbone": s["backbone"], "input_size": s["input_size"], "dim": s["dim"]}
                for name, s in spaces.items()
            ]
            write_json(tmp / SPACES_INDEX, {"spaces": index, "referees": referees})
    ddp.barrier()  # the spaces are in place before any process moves on
    ddp.close()
    if not ddp.is_main:
        return None
    return {
        "spaces": len(spaces),
        "rows": next(iter(spaces.values()))["rows"] if spaces else 0,
        "dims": {name: s["dim"] for name, s in spaces.items()},
        "seconds": round(sum(s["seconds"] for s in [*spaces.values(), *referees]), 3),
        "per_space": spaces,
        "referees": {r["name"]: r for r in referees},
    }
