"""TURTLE's knobs, measured on one extract stage's output: each setting's ACC on a labelled split, its
label-free scores (the neighbour score and the generalisation score; ``restart_score`` says which picks a
restart), and its time, beside k-means on the same
features. The labels are read only to score.

Usage, on a project whose extract stage has run (``quality.py --workdir`` keeps its clones):
``python benchmarks/turtle.py --features /tmp/bq/cifar10-seed0/artifacts/features --fit-split train
--score-split test --setting default --setting outer_lr=0.03 --setting "outer_steps=1000 restarts=1"
--setting size_prior=clusters --out benchmarks/results/turtle.json``. Every restart is scored; ``acc`` is
the one the score picks. A setting's ``size_prior`` (``uniform`` or ``clusters``) is ``finetune.size_prior``'s.
``--space DIR`` (repeated) adds further representation spaces, as ``extract.spaces`` does (the
extract_spaces stage's ``artifacts/spaces/<name>``); ``--name`` keys the result in ``--out``.
``--score-labellings`` also gives the classes and the k-means start the label-free scores a restart gets:
where the classes score below TURTLE's own labelling, its objective, not its optimiser, keeps it from them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from imageclust.clustering.preprocess import l2_normalize  # noqa: E402
from imageclust.finetune import turtle  # noqa: E402
from imageclust.finetune.guard import Referee  # noqa: E402
from imageclust.finetune.projection import project_spaces  # noqa: E402
from imageclust.finetune.size_prior import cluster_shares, smoothed_prior  # noqa: E402
from imageclust.metrics import clustering_accuracy  # noqa: E402
from imageclust.tables import read_features  # noqa: E402


def kmeans_start(vectors: np.ndarray, fit: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The cluster stage's default: k-means (10 restarts) on the L2-normalised features of the fitted rows."""
    from sklearn.cluster import KMeans

    unit = l2_normalize(vectors)
    return KMeans(k, n_init=10, random_state=seed).fit(unit[fit]).predict(unit)


def turtle_params(overrides: dict) -> tuple[turtle.Params, str]:
    """A setting's TURTLE parameters, and its ``size_prior`` (not one of them)."""
    overrides = dict(overrides)
    size_prior = overrides.pop("size_prior", "uniform")
    if size_prior not in ("uniform", "clusters"):
        raise SystemExit(f"size_prior={size_prior!r}: expected uniform or clusters")
    return turtle.Params(**overrides), size_prior


def projected(spaces: list[np.ndarray], fit, p: turtle.Params, k: int, seed: int):
    """What a TURTLE restart is fitted and judged on: every row of ``spaces`` projected as the finetune
    stage projects them, the ``fit`` rows of those, and the referee of the first space's ``fit`` rows."""
    _, z_all = project_spaces(spaces, fit, p, seed, num_clusters=k)
    rows = torch.from_numpy(np.flatnonzero(fit))
    return z_all, [space[rows] for space in z_all], Referee(np.asarray(spaces[0])[fit], seed)


def measure(spaces: list[np.ndarray], labels, fit, score, initial, k: int, overrides: dict, seed: int) -> dict:
    """Every restart as the finetune stage runs it (``turtle.fit_restart``) on the features of
    ``spaces``, each scored by ACC on the ``score`` rows and by the label-free scores on the ``fit``
    rows; the restart ``p.restart_score`` ranks first is picked. ``overrides`` may set ``size_prior``:
    ``uniform`` (the default) or ``clusters`` (``finetune.size_prior``'s estimate, ``initial``'s sizes on
    the ``fit`` rows)."""
    p, size_prior = turtle_params(overrides)
    started = time.perf_counter()
    z_all, z, referee = projected(spaces, fit, p, k, seed)
    start = torch.as_tensor(initial, dtype=torch.long)[torch.from_numpy(np.flatnonzero(fit))]
    prior = smoothed_prior(cluster_shares(initial[fit], k)[0]) if size_prior == "clusters" else None
    restarts = []
    for r in range(p.restarts):
        encoder = turtle.fit_restart(z, start, k, p, seed, r, prior=prior)
        fitted, generalisation = turtle.scored_labels(encoder, z, p, seed)
        clusters = turtle.label(encoder, z_all).argmax(1).numpy()
        restarts.append(
            {
                "generalisation_score": round(generalisation, 4),
                "neighbour_score": round(referee.score(fitted), 4),
                "acc": round(clustering_accuracy(labels[score], clusters[score]), 4),
                "clusters_used": int(len(np.unique(clusters))),
            }
        )
    ranked_by = f"{p.restart_score}_score"
    picked = max(range(len(restarts)), key=lambda r: restarts[r][ranked_by])
    return {
        "acc": restarts[picked]["acc"],
        "picked_restart": picked,
        "picked_by": p.restart_score,
        "restarts": restarts,
        "seconds": round(time.perf_counter() - started, 1),
    }


def labelling_scores(spaces: list[np.ndarray], fit, labellings: dict, k: int, p: turtle.Params, seed: int) -> dict:
    """The scores ``measure`` gives a restart of TURTLE run with ``p`` (the generalisation score in its
    projected spaces, the neighbour score in the first space), of each fixed labelling in ``labellings``
    (name: a label per row), on the ``fit`` rows."""
    _, z, referee = projected(spaces, fit, p, k, seed)
    scores = {}
    for name, labelling in labellings.items():
        fitted = np.unique(np.asarray(labelling)[fit], return_inverse=True)[1]
        scores[name] = {
            "generalisation_score": round(turtle.generalisation(z, fitted, p, seed), 4),
            "neighbour_score": round(referee.score(fitted), 4),
        }
    return scores


def parse_setting(setting: str) -> dict:
    """``default`` or ``key=value key=value``, each value read as YAML."""
    pairs = [] if setting == "default" else [kv.split("=", 1) for kv in setting.split()]
    for pair in pairs:
        if len(pair) != 2:
            raise SystemExit(f"--setting {setting!r}: {pair[0]!r} is not key=value")
    return {key: yaml.safe_load(value) for key, value in pairs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--space", type=Path, action="append", default=[], help="a further space's features folder")
    parser.add_argument("--name", help="the result's key in --out (default: the project folder's name)")
    parser.add_argument("--fit-split", default="train")
    parser.add_argument("--score-split", default="test", help="a split's name, or all")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--score-labellings", action="store_true", help="score the classes and the k-means start too")
    parser.add_argument("--setting", action="append", required=True, help="'default' or 'key=value key=value'")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    table = read_features(args.features)
    fit = table.splits == args.fit_split
    score = np.ones(len(table.splits), bool) if args.score_split == "all" else table.splits == args.score_split
    more = [read_features(folder) for folder in args.space]
    for folder, space in zip(args.space, more):
        if not np.array_equal(space.ids, table.ids):
            parser.error(f"--space {folder}: its rows differ from --features")
    spaces = [table.vectors, *(space.vectors for space in more)]
    initial = kmeans_start(table.vectors, fit, args.k, args.seed)  # on the first space, as the cluster stage
    results = {
        "features": str(args.features),
        "spaces": [str(folder) for folder in args.space],
        "fit_split": args.fit_split,
        "score_split": args.score_split,
        "kmeans_acc": round(clustering_accuracy(table.labels[score], initial[score]), 4),
    }
    settings = {setting: parse_setting(setting) for setting in args.setting}
    if args.score_labellings:  # as the first setting projects the spaces and scores a restart
        labellings = {"classes": table.labels, "kmeans": initial}
        p, _ = turtle_params(settings[args.setting[0]])
        results["labellings"] = labelling_scores(spaces, fit, labellings, args.k, p, args.seed)
        print("labellings", json.dumps(results["labellings"]), flush=True)
    for setting, overrides in settings.items():
        results[setting] = measure(spaces, table.labels, fit, score, initial, args.k, overrides, args.seed)
        print(setting, json.dumps(results[setting]), flush=True)
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    report[args.name or args.features.parent.parent.name] = results
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
