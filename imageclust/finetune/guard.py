"""The guard of the methods that train the encoder on their own pseudo-labels (DeepCluster, spectral
fine-tuning). Their loss, and any score measured in the space they train, can only improve, while
their clusters may leave the classes: DeepCluster after SimCLR went from the k-means it started at,
0.974, to 0.446 on MNIST. So a clustering is judged in a space the method does not train: the
features it started from (the extract stage's), by how well it generalises there by nearest
neighbours (``labelfree.neighbour_kappa``: a 10-NN classifier fitted on part of the rows predicts the
clustering on the rest, corrected for chance). The method keeps its best-judged epoch, and the
cluster stage's assignment, judged the same way, is the floor: a run that never beats it returns it.

Why neighbours and not TURTLE's linear classifiers: a linear classifier predicts the Voronoi cells of
a k-means in the same space almost perfectly, so the linear score ranks such a clustering first even
when it is worse. On MNIST (10,000 images, SimCLR features) the linear score put DeepCluster's first
k-means (ACC 0.924) above the cluster stage's k-means on a UMAP (0.967); the neighbour score ranks
them the right way round (0.955 against 0.978), as on Fashion-MNIST and CIFAR-10.

The referee space is only meaningful when the encoder was pretrained: from random weights
(``pretrain.method: none``) the guard is off (``guard: false`` in the method's block).

``floor`` is the same floor for the methods on frozen features (``finetune.floor``), judged by the
neighbour score too, as ``finetune.method: auto`` judges its candidates by default: over the 48
method-dataset pairs of ``benchmarks/choose_method.py`` and ``benchmarks/size_prior.py`` it left the
methods 0.0075 ACC above the cluster stage on average, against 0.0038 with the mean of the neighbour
and linear scores, and more than 0.01 below it twice instead of three times.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..clustering.k_criteria import generalisation_kappa, principal_components
from ..labelfree import neighbour_kappa
from .base import FinetuneResult, FinetuneRun
from .none import keep_cluster_stage

log = logging.getLogger(__name__)


@dataclass
class Referee:
    """Scores labellings of the training rows in their starting features, on one seeded subsample
    (the same rows every time, so that scores compare). With more representation spaces (TURTLE's
    ``extract.spaces``), a score is the mean of the scores in each space on those rows: judged in the
    extract stage's features alone, the cluster stage's k-means, made there, was ranked first on
    Fashion-MNIST (SimCLR features and EfficientNet-Lite0 at 64 px) although TURTLE's clustering
    over both spaces was better by 0.029 ACC and ranked first in the other space. ``by_space`` gives
    each space's score (the floor's rule needs every space)."""

    vectors: np.ndarray  # (n, d) the extract stage's features
    seed: int
    max_samples: int = 3000
    more_spaces: list[np.ndarray] = field(default_factory=list)  # (n, d_i) each further space's
    # the rows of the arrays that labellings label (the training rows); None: every row. Given rather
    # than cut out, so that no space is copied whole
    train_rows: np.ndarray | None = None
    rows: np.ndarray = field(init=False)  # the subsample judged, as positions in a labelling
    sampled: list[np.ndarray] = field(init=False)  # each space's rows of the subsample, the extract stage's first

    def __post_init__(self):
        labelled = np.arange(len(self.vectors)) if self.train_rows is None else self.train_rows
        n = len(labelled)
        rng = np.random.default_rng(self.seed)
        self.rows = np.sort(rng.choice(n, self.max_samples, replace=False)) if n > self.max_samples else np.arange(n)
        self.sampled = [np.asarray(z[labelled[self.rows]], dtype=np.float32) for z in self.every_space]

    @classmethod
    def of_run(cls, run: FinetuneRun) -> Referee:
        """The referee of ``run``'s training rows in every space it was given."""
        more = list(run.more_spaces.values())
        return cls(run.vectors, run.seed, more_spaces=more, train_rows=np.flatnonzero(run.train))

    @property
    def every_space(self) -> list[np.ndarray]:
        return [self.vectors, *self.more_spaces]

    @property
    def spaces(self) -> int:
        return len(self.sampled)

    def score(self, train_labels: np.ndarray) -> float:
        """The chance-corrected neighbour score of a labelling of every training row (-1: one cluster),
        averaged over the spaces."""
        return float(np.mean(self.by_space(train_labels, "neighbour")))

    def judge(self, train_labels: np.ndarray, score: str = "both") -> float:
        """``neighbour`` (``score``), ``linear``, or ``both``: their mean (``finetune.auto.score``'s choices)."""
        return float(np.mean(self.by_space(train_labels, score)))

    def linear(self, train_labels: np.ndarray) -> float:
        """TURTLE's generalisation score of the labelling, chance-corrected (-1: one cluster); its own
        seeded subsample of ``max_samples`` rows, after a PCA of every training row to 128 dimensions;
        averaged over the spaces."""
        return float(np.mean(self.by_space(train_labels, "linear")))

    def by_space(self, train_labels: np.ndarray, score: str = "neighbour") -> list[float]:
        """The labelling's ``neighbour``, ``linear`` or ``both`` score in each space, the extract stage's first."""
        if score == "neighbour":
            labels = np.asarray(train_labels)[self.rows]
            return [neighbour_kappa(z, labels, seed=self.seed) for z in self.sampled]
        if score == "linear":
            return [linear_kappa(z, train_labels, self.seed, self.max_samples) for z in self.projected]
        near, linear = self.by_space(train_labels, "neighbour"), self.by_space(train_labels, "linear")
        return [(a + b) / 2 for a, b in zip(near, linear, strict=True)]

    @cached_property
    def projected(self) -> list[np.ndarray]:
        """Every training row on its principal components in each space, fitted once for every labelling judged."""
        labelled = slice(None) if self.train_rows is None else self.train_rows  # one space copied at a time
        return [principal_components(z[labelled], self.seed) for z in self.every_space]


def linear_kappa(projected: np.ndarray, labels: np.ndarray, seed: int, max_samples: int) -> float:
    """TURTLE's generalisation score of ``labels`` on rows already on their principal components,
    chance-corrected (``generalisation_kappa``); -1 for a single cluster."""
    labels = np.unique(np.asarray(labels), return_inverse=True)[1]
    if labels.max(initial=0) < 1:
        return -1.0
    return generalisation_kappa(projected, labels, seed, max_samples=max_samples)


@dataclass(frozen=True)
class RefereeSpace:
    """A space that no candidate was fitted in (``extract.referees``): the features of some training rows
    (a fixed sample, ``features/referees.py``), judged on those rows alone."""

    rows: np.ndarray  # positions in the run's rows
    vectors: np.ndarray  # (len(rows), d)
    seed: int = 0

    def judge(self, clusters: np.ndarray, score: str) -> float:
        """``clusters`` (of every row of the run) judged here by ``score``, as ``Referee.judge`` judges."""
        labels = np.asarray(clusters)[self.rows]
        scores = []
        if score in ("neighbour", "both"):
            scores.append(neighbour_kappa(self.vectors, labels, seed=self.seed))
        if score in ("linear", "both"):
            scores.append(linear_kappa(self.projected, labels, self.seed, len(labels)))
        return float(np.mean(scores))

    @cached_property
    def projected(self) -> np.ndarray:
        """The rows on their principal components, fitted once for every labelling judged."""
        return principal_components(self.vectors, self.seed)

    def cut(self, rows: np.ndarray) -> RefereeSpace:
        """This space on a run cut to ``rows`` (sorted positions): the rows it holds of them, renumbered."""
        kept = np.isin(self.rows, rows)
        return RefereeSpace(np.searchsorted(rows, self.rows[kept]), self.vectors[kept], self.seed)


@dataclass
class BestEpoch:
    """The best-judged state so far: ``offer`` each epoch's labelling with a way to snapshot what the
    method would need to return it; the start (the cluster stage's assignment) is the first offer."""

    referee: Referee
    start_score: float = float("nan")
    score: float = -float("inf")
    epoch: int | None = None  # None: the start is the best
    snapshot: object = None
    scores: list[float] = field(default_factory=list)

    @classmethod
    def from_start(cls, referee: Referee, start_labels: np.ndarray) -> BestEpoch:
        best = cls(referee)
        best.start_score = best.score = referee.score(start_labels)
        return best

    def offer(self, epoch: int, train_labels: np.ndarray, snapshot) -> float:
        """Score epoch ``epoch``'s labelling; keep ``snapshot()`` when it is the best so far."""
        score = self.referee.score(train_labels)
        self.scores.append(score)
        if score > self.score:
            self.score, self.epoch, self.snapshot = score, epoch, snapshot()
        return score

    @property
    def kept_start(self) -> bool:
        return self.epoch is None

    def stats(self) -> dict:
        return {
            "guard_score": "neighbour_kappa in the starting features",
            "guard_start_score": round(self.start_score, 4),
            "guard_best_score": round(self.score, 4),
            "guard_best_epoch": self.epoch,
            "guard_kept_cluster_stage": self.kept_start,
            "guard_scores": [round(s, 4) for s in self.scores],
        }

    def state(self) -> dict:
        """For a checkpoint (the snapshot is the method's to save)."""
        return {"start_score": self.start_score, "score": self.score, "epoch": self.epoch, "scores": self.scores}

    def restore(self, state: dict, snapshot) -> None:
        self.start_score, self.score, self.epoch = state["start_score"], state["score"], state["epoch"]
        self.scores, self.snapshot = list(state["scores"]), snapshot


FLOOR_SCORE = "neighbour"  # how the floor judges (a ``Referee.judge`` score); see the module's docstring


def below_floor(score: float, start_score: float) -> bool:
    """The floor's rule in one space: a method's clustering judged below the cluster stage's gives way to it."""
    return score < start_score


def below_floor_everywhere(scores: list[float], start_scores: list[float]) -> bool:
    """The floor's rule over several spaces: judged below the cluster stage's in every one (each the
    extract stage's first)."""
    return all(below_floor(score, start) for score, start in zip(scores, start_scores, strict=True))


def floor(run: FinetuneRun, result: FinetuneResult) -> FinetuneResult:
    """``finetune.floor``: the cluster stage's assignment, judged by ``FLOOR_SCORE``, is the floor of a
    method on frozen features; the statistics say how both were judged. With more spaces (TURTLE's),
    the method gives way only when judged below in every one: the cluster stage's k-means was made in
    the first and scores high there whatever it is worth, while the method was fitted in all of them
    (docs/finetuning.md, "The floor of the methods on frozen features")."""
    train_rows = np.flatnonzero(run.train)
    referee = Referee.of_run(run)
    starts = referee.by_space(run.initial_clusters[train_rows], FLOOR_SCORE)
    scores = referee.by_space(result.clusters[train_rows], FLOOR_SCORE)
    kept = below_floor_everywhere(scores, starts)
    start, score = float(np.mean(starts)), float(np.mean(scores))
    stats = {
        "floor_score_name": FLOOR_SCORE,
        "floor_start_score": round(start, 4),
        "floor_score": round(score, 4),
        "floor_kept_cluster_stage": kept,
        "floor_spaces": referee.spaces,
    }
    if referee.spaces > 1:  # each space's, the extract stage's first
        stats["floor_start_scores"] = [round(v, 4) for v in starts]
        stats["floor_scores"] = [round(v, 4) for v in scores]
    if not kept:
        return dataclasses.replace(result, stats={**result.stats, **stats})
    log.warning(
        "%s: its clustering is judged worse than the cluster stage's in %s (%.4f against "
        "%.4f); the cluster stage's assignment is kept (finetune.floor)",
        run.params.method,
        "the extract stage's features" if referee.spaces == 1 else f"each of {referee.spaces} representation spaces",
        score,
        start,
    )
    return cluster_stage_kept(run, {**result.stats, **stats})


def cluster_stage_kept(run: FinetuneRun, stats: dict) -> FinetuneResult:
    """The cluster stage's assignment as the method's result, with a model that tells ``predict`` to
    assign new images by the cluster stage's (what ``finetune.method: none`` returns, said so)."""
    return dataclasses.replace(keep_cluster_stage(run), model={"kept_cluster_stage": True}, stats=stats)


def warn_if_kept_start(method: str, best: BestEpoch) -> None:
    if best.kept_start:
        log.warning(
            "%s: no epoch's clustering beat the cluster stage's in the starting features "
            "(neighbour kappa %.4f at best against %.4f); the cluster stage's assignment is kept",
            method,
            max(best.scores, default=float("nan")),
            best.start_score,
        )
