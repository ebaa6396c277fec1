"""``finetune.method: auto``: fit every candidate method on the same features and keep the clustering
that generalises best in the extract stage's features, and in every space of ``extract.spaces`` when
TURTLE is a candidate, averaged (``guard.Referee``): by default by nearest
neighbours (``labelfree.neighbour_kappa``, chance-corrected), else by linear classifiers (TURTLE's
generalisation score) or the mean of the two. Each is biased towards the methods that optimise it:
the linear score towards the labelling TURTLE optimises for it and the Voronoi cells of a k-means in
the same space, the neighbour score towards clusterings made on a neighbour graph (SCAN, a UMAP).
Measured over 16 cases (``benchmarks/choose_method.py`` and ``benchmarks/size_prior.py``), the linear
bias cost more: on 1,500-image CIFAR-10 draws it picked TURTLE every time, with the lowest ACC on some.
No label is read. With further spaces (``extract.spaces``, when TURTLE is a candidate) the score is
the mean over the spaces, and ``none`` keeps its place only as the floor keeps it (``choose``). Every
candidate's score and the pick go to ``metrics/finetune.json`` (``chosen``, ``candidate_scores``), so
``dvc exp show`` shows which won; ``predict`` assigns new images with the winner's model.

The candidates are methods on frozen features (``none``, the cluster stage's assignment, is one), each
run with its defaults plus ``finetune.auto.overrides.<method>``, not with its own block of params.yaml:
the stage depends on the ``finetune.auto`` block only, so a cached auto result cannot be served after a
change to ``finetune.scan``. ``benchmarks/choose_method.py`` measures the regret of each score.

On many rows ``screen_rows`` fits and judges the candidates on a seeded sample of the training rows and
fits only the winner on all of them (MNIST's 70,000 images: the same pick in 144 s instead of 375;
``benchmarks/auto_screen.py``).

With referee spaces (``extract.referees``: backbones none of the candidates was fitted in, embedded for
a fixed sample of training rows) the candidates are judged there instead, by the mean over the
referees, and ``none`` has no special rule: on 12 draws of digits and CIFAR-10 that cut the mean
regret from 0.036 to 0.012 (``benchmarks/referee_space.py``, ``features/referees.py``).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Literal

import numpy as np
from pydantic import Field, ValidationError, field_validator, model_validator

from ..config import Section
from .base import CHECKPOINT_FILE, FinetuneMethod, FinetuneResult, FinetuneRun
from .guard import Referee, below_floor_everywhere

log = logging.getLogger(__name__)
NONE = "none"  # the candidate that is the cluster stage's assignment
EXTRACTED = "features"  # the extract stage's features, as the spaces judged in are named
MIN_REFEREE_ROWS = 500  # a screen that leaves fewer rows to judge by in a referee space draws a warning
# every registered method by name: registry.py, which imports this module, fills it
METHODS: dict[str, FinetuneMethod] = {}


class Params(Section):
    candidates: list[str] = Field(
        default_factory=lambda: ["none", "scan", "temi", "turtle"],
        min_length=1,
        description="methods on frozen features to fit and judge (`none`: the cluster stage's assignment)",
    )
    score: Literal["neighbour", "linear", "both"] = Field(
        "neighbour",
        description=(
            "how a candidate's clustering is judged in the extract stage's features (and those of extract.spaces, "
            "averaged): by nearest neighbours "
            "(labelfree.neighbour_kappa), by linear classifiers (TURTLE's generalisation score), or their mean"
        ),
    )
    overrides: dict[str, dict] = Field(
        default_factory=dict,
        description="per candidate, keys of its block that differ from its defaults, e.g. {turtle: {restarts: 1}}",
    )
    screen_rows: int | None = Field(
        None,
        ge=200,
        description=(
            "fit and judge the candidates on a seeded sample of this many training rows, then fit only the "
            "winner on every row; null: every candidate on every row"
        ),
    )

    @field_validator("candidates")
    @classmethod
    def _frozen_feature_methods(cls, names: list[str]) -> list[str]:
        frozen = [m for m, record in METHODS.items() if m != "auto" and not record.trains_encoder(record.params())]
        for name in names:
            if name in METHODS and name not in frozen and name != "auto":
                raise ValueError(f"{name!r} trains the encoder; auto compares methods on the frozen features")
            if name not in frozen:
                raise ValueError(f"{name!r} is not a method auto can fit; choose from {frozen}")
        if len(set(names)) != len(names):
            raise ValueError(f"{names} names a method twice")
        return names

    @model_validator(mode="after")
    def _overrides_of_candidates(self) -> Params:
        for name, block in self.overrides.items():
            if name not in self.candidates:
                raise ValueError(f"overrides.{name}: {name!r} is not among the candidates {self.candidates}")
            candidate_block(name, block)
        return self


def candidate_block(name: str, overrides: dict) -> Section:
    """The candidate's params: its defaults and the overrides, refused with the key at fault."""
    try:
        block = METHODS[name].params(**overrides)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(["overrides", name, *(str(part) for part in first["loc"])])
        raise ValueError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None
    if METHODS[name].trains_encoder(block):
        raise ValueError(f"overrides.{name}: these settings train the encoder; auto fits methods on frozen features")
    return block


def screen_rows(train_rows: np.ndarray, judged_rows: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` of ``train_rows``, sorted: every training row of ``judged_rows`` (the referee spaces'),
    the rest drawn with ``seed``; drawn among ``judged_rows`` alone when they are more than ``size``.
    The referees' rows are themselves a seeded draw of the training rows, so the screen stays a uniform
    sample, and the judge keeps every row it has: drawn regardless of them, a 10,000-row screen of
    CIFAR-10's 50,000 training images kept about 600 of the referee's 3,000."""
    rng = np.random.default_rng(seed)
    judged = np.intersect1d(judged_rows, train_rows)
    if len(judged) >= size:
        return np.sort(rng.choice(judged, size, replace=False))
    rest = rng.choice(np.setdiff1d(train_rows, judged), size - len(judged), replace=False)
    return np.sort(np.concatenate([judged, rest]))


def screen_sample(run: FinetuneRun) -> FinetuneRun | None:
    """The run cut to ``screen_rows`` training rows drawn with the run's seed (every row's table in step),
    the referee spaces' rows among them (``screen_rows``); None when there are no more training rows
    than that."""
    train_rows = np.flatnonzero(run.train)
    size = run.block.screen_rows
    if size is None or len(train_rows) <= size:
        return None
    judged = np.concatenate([np.empty(0, int), *(space.rows for space in run.referee_spaces.values())])
    rows = screen_rows(train_rows, judged, size, run.seed)  # duplicates across referees: intersect1d drops them
    referees = {name: space.cut(rows) for name, space in run.referee_spaces.items()}
    thin = [f"{name} ({len(space.rows)})" for name, space in referees.items() if len(space.rows) < MIN_REFEREE_ROWS]
    if thin:
        log.warning("auto: the screen leaves few rows to judge by in the referee space(s) %s", ", ".join(thin))
    return dataclasses.replace(
        run,
        vectors=run.vectors[rows],
        labels=run.labels[rows],
        train=run.train[rows],
        initial_clusters=run.initial_clusters[rows],
        initial_confidence=run.initial_confidence[rows],
        row_images=None if run.row_images is None else run.row_images[rows],
        more_spaces={name: space[rows] for name, space in run.more_spaces.items()},
        referee_spaces=referees,
        run_id=f"{run.run_id}:screen",
    )


def fit_candidate(run: FinetuneRun, name: str, folder: str) -> FinetuneResult:
    """One candidate, with its defaults and overrides; it resumes from ``checkpoint_dir / folder``."""
    p = run.block
    params = run.params.model_copy(update={"method": name, name: candidate_block(name, p.overrides.get(name, {}))})
    checkpoints = None
    if run.checkpoint_dir is not None:  # each candidate resumes its own run
        checkpoints = run.checkpoint_dir / folder
        checkpoints.mkdir(parents=True, exist_ok=True)
    candidate = dataclasses.replace(
        run,
        params=params,
        checkpoint_dir=checkpoints,
        run_id=f"{run.run_id}:{name}",
        curves=run.curves.section() if run.curves is not None else None,  # each its own steps from 0
    )
    return METHODS[name].run(candidate)


def judge(run: FinetuneRun):
    """How ``run``'s candidates are judged: a function of a clustering of every row to its score in each
    space, and the spaces' names. In the referee spaces when there are any; else in the spaces the
    candidates were fitted in (``guard.Referee``), the extract stage's first."""
    score, referees = run.block.score, run.referee_spaces
    if referees:
        spaces = list(referees.values())
        return (lambda clusters: [space.judge(clusters, score) for space in spaces]), list(referees)
    train_rows = np.flatnonzero(run.train)
    referee = Referee.of_run(run)
    return (lambda clusters: referee.by_space(clusters[train_rows], score)), [EXTRACTED, *run.more_spaces]


def fit_candidates(run: FinetuneRun, folder_prefix: str = "") -> dict[str, tuple[FinetuneResult, list[float]]]:
    """Every candidate's result on ``run`` and its score in each space judged (``judge``), in the order
    of ``candidates``."""
    p = run.block
    scores_of, spaces = judge(run)
    fitted = {}
    for name in p.candidates:
        result = fit_candidate(run, name, folder_prefix + name)
        scores = scores_of(result.clusters)
        log.info("auto: %s scores %.4f (%s) in %s", name, np.mean(scores), p.score, ", ".join(spaces))
        fitted[name] = (result, scores)
    return fitted


def choose(scores: dict[str, list[float]], fitted_spaces: bool = True) -> str:
    """The candidate with the best mean score over the spaces (the first of equals, in the listed order).
    Judged in the spaces the candidates were fitted in (``fitted_spaces``), and more than one, the cluster
    stage's assignment (``none``) gives way to the best other candidate unless that one is judged worse
    in every space, as the floor rules (``guard.floor``): the cluster stage's k-means was made in the first
    space and scores high there whatever it is worth. In referee spaces no candidate has that edge."""
    mean = {name: float(np.mean(by_space)) for name, by_space in scores.items()}
    chosen = max(mean, key=mean.__getitem__)
    others = [name for name in scores if name != NONE]
    if fitted_spaces and chosen == NONE and others and len(scores[NONE]) > 1:
        best_other = max(others, key=mean.__getitem__)
        if not below_floor_everywhere(scores[best_other], scores[NONE]):
            chosen = best_other
    return chosen


def drop_resume_state(run: FinetuneRun, folders: list[str]) -> None:
    """Done: no candidate's resume state stays in DVC's cache."""
    if run.checkpoint_dir is None:
        return
    for folder in folders:
        (run.checkpoint_dir / folder / CHECKPOINT_FILE).unlink(missing_ok=True)
        if (run.checkpoint_dir / folder).is_dir() and not any((run.checkpoint_dir / folder).iterdir()):
            (run.checkpoint_dir / folder).rmdir()


def finetune_auto(run: FinetuneRun) -> FinetuneResult:
    """Fit the candidates (on the screen sample, if any), keep the best-scoring one (the first of equals,
    in the listed order); after a screen, the winner alone is fitted on every row."""
    sample = screen_sample(run)
    prefix = "" if sample is None else "screen-"
    fitted = fit_candidates(run if sample is None else sample, prefix)
    referees = list(run.referee_spaces)
    chosen = choose({name: scores for name, (_, scores) in fitted.items()}, fitted_spaces=not referees)
    log.info("auto: %s chosen", chosen)
    result = fitted[chosen][0]
    screened = {}
    if sample is not None:
        log.info("auto: fitting %s on all %d rows", chosen, len(run.vectors))
        result = fit_candidate(run, chosen, chosen)
        screened = {"screened_on_rows": len(sample.vectors)}
    drop_resume_state(run, [prefix + name for name in run.block.candidates] + ([chosen] if prefix else []))
    by_space = {}
    if run.more_spaces or referees:  # each space's, in the order of judged_in
        by_space = {"candidate_scores_by_space": {n: [round(v, 4) for v in s] for n, (_, s) in fitted.items()}}
    if referees:
        names = ", ".join(referees)
        chosen_by = f"{run.block.score} score in the referee space(s) {names} (extract.referees), averaged"
    else:
        chosen_by = f"{run.block.score} score in the extract stage's features" + (
            f" and {len(run.more_spaces)} more space(s), averaged" if run.more_spaces else ""
        )
    return dataclasses.replace(
        result,
        model={**result.model, "method": chosen},  # what predict assigns with
        stats={
            **result.stats,
            "chosen": chosen,
            "candidate_scores": {name: round(float(np.mean(scores)), 4) for name, (_, scores) in fitted.items()},
            "chosen_by": chosen_by,
            "judged_in": referees or [EXTRACTED, *run.more_spaces],
            **by_space,
            **screened,
        },
    )


METHOD = FinetuneMethod("auto", finetune_auto, Params, assign=None, uses_spaces=True, uses_referees=True, floored=False)
