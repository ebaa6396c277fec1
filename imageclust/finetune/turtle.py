"""TURTLE on extracted features (Gadetsky, Jiang, Brbic, ICML 2024, "Let Go of Your Labels with Unsupervised
Transfer"; official code mlbio-epfl/turtle, ``run_turtle.py``): search for the labelling that a linear classifier
on the frozen features generalises best.

Kept from the paper: a task encoder of one weight-normalised linear head per representation space, whose labels are
the mean of the heads' softmaxes; at each outer step, linear classifiers fitted to the current labels by a few Adam
steps on a batch (warm-started from the previous step's, or fresh); the outer loss of ``losses.turtle`` (their
cross-entropy against the labels, held fixed, minus ``gamma`` times the entropy of the mean labels); restarts
ranked without labels: by the paper's generalisation score (``labelfree.generalisation_score``), or by the
chance-corrected neighbour score in the extract stage's features and every further space, averaged
(``guard.Referee``, as ``auto`` and the floor judge), the default: the generalisation score saturates near 1
on well-separated features and ties restarts whose ACC differs by 0.04 (docs/results.md, "TURTLE beside the
other methods").

Made for a CPU: each space is L2-normalised, centred and projected on its ``pca_dim`` leading principal components
(fitted on the training rows; with ``rows_per_component``, fewer on few rows) and scaled, so the linear layers are small
and one learning rate suits every backbone; the outer learning rate decays on a cosine. The spaces are the extract
stage's features, then those of ``extract.spaces``. The entropy term may expect clusters of unequal size
(``finetune.size_prior``)."""

from __future__ import annotations

import logging
import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..clustering.base import cluster_means, distances_to_centres
from ..config import Int, Section
from ..labelfree import generalisation_score
from ..losses.turtle import task_labels, turtle_inner_loss, turtle_outer_loss
from ..runtime import check_finite_loss
from .base import FinetuneMethod, FinetuneResult, FinetuneRun
from .guard import Referee
from .projection import SpaceProjection, project_spaces
from .size_prior import size_prior

log = logging.getLogger(__name__)
HINT = "Try a lower finetune.turtle.outer_lr"
STEPS_PER_ROW = 20  # outer steps per logged row of curves (and per checkpoint unit)


class Params(Section):
    outer_steps: Int = Field(300, ge=1, description="steps of the task encoder, per restart (the paper: 6,000)")
    inner_steps: Int = Field(10, ge=1, description="Adam steps of the inner classifiers per outer step (the paper's M)")
    outer_lr: float = Field(0.01, gt=0, description="Adam learning rate of the task encoder, decayed on a cosine")
    inner_lr: float = Field(0.001, gt=0, description="Adam learning rate of the inner linear classifiers")
    gamma: float = Field(10.0, ge=0, description="weight of the entropy of the mean labels (eq. 12)")
    batch_size: Int = Field(
        10000, ge=2, description="rows per outer step (all when fewer; the paper: 10,000); not finetune.batch_size"
    )
    warm_start: bool = Field(True, description="the inner classifiers continue from the previous outer step's")
    pca_dim: Int | None = Field(256, ge=1, description="principal components kept per space; null: all dimensions")
    rows_per_component: Int | None = Field(
        None,
        ge=1,
        description="at most one principal component per this many training rows (at least K): on few images a "
        "linear classifier in many dimensions generalises labellings that do not follow the classes (25 lifts "
        "TURTLE on 1,500 CIFAR-10 images, but auto's neighbour score then overrates it); null: pca_dim alone",
    )
    whiten: bool = Field(False, description="scale each principal component to unit variance (else all by one factor)")
    restarts: Int = Field(3, ge=1, description="task encoders from different starts; the best-scored is kept")
    restart_score: Literal["neighbour", "generalisation"] = Field(
        "neighbour",
        description="how restarts are ranked: the chance-corrected nearest-neighbour score in the extract stage's "
        "features and those of extract.spaces, averaged (as `auto` judges), or the paper's generalisation score "
        "(k-fold linear classifiers)",
    )
    score_folds: Int = Field(5, ge=2, description="folds of the generalisation score")
    score_samples: Int = Field(5000, ge=10, description="rows the generalisation score is computed on")
    init: Literal["clusters", "random"] = Field(
        "clusters", description="clusters: restart 1 starts at the cluster stage's clusters, others random; random: all"
    )
    init_sharpness: float = Field(
        4.0, gt=0, description="init clusters: logits are this over the mean squared distance times the distances"
    )
    schedule: Literal["cosine", "constant"] = Field("cosine", description="of the outer learning rate")


class TaskEncoder(nn.Module):
    """One weight-normalised linear head per space (eq. 9)."""

    def __init__(self, dims: list[int], num_clusters: int):
        super().__init__()
        self.heads = nn.ModuleList(nn.utils.parametrizations.weight_norm(nn.Linear(d, num_clusters)) for d in dims)

    def forward(self, spaces: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return task_labels([head(z) for head, z in zip(self.heads, spaces)])

    @torch.no_grad()
    def start_at(self, spaces: list[torch.Tensor], clusters: torch.Tensor, sharpness: float) -> None:
        """Each head's softmax becomes a soft nearest-mean assignment to ``clusters``' means:
        logits ``-s/2 |z - c|^2`` up to a constant, with ``s`` = sharpness / mean squared distance of a
        row to its mean (a cluster with no rows keeps its random start)."""
        clustered = clusters >= 0  # noise (-1) of density-based clusterings starts nowhere
        clusters = clusters[clustered]
        for head, z in zip(self.heads, spaces):
            z = z[clustered]
            num_clusters = head.bias.shape[0]
            sums = torch.zeros(num_clusters, z.shape[1], dtype=z.dtype, device=z.device).index_add_(0, clusters, z)
            counts = torch.bincount(clusters, minlength=num_clusters)
            used = counts > 0
            means = sums[used] / counts[used, None]
            spread = (z - (sums / counts.clamp_min(1)[:, None])[clusters]).pow(2).sum(1).mean()
            s = sharpness / spread.clamp_min(1e-12)
            weight = head.parametrizations.weight
            weight.original1[used] = s * means
            weight.original0[used] = (s * means).norm(dim=1, keepdim=True)
            head.bias[used] = -s / 2 * means.pow(2).sum(1)

    def plain_weights(self) -> list[dict]:
        """Each head as a plain linear layer's weight and bias (the weight norm folded in)."""
        return [
            {"weight": head.weight.detach().cpu().clone(), "bias": head.bias.detach().cpu().clone()}
            for head in self.heads
        ]


class InnerClassifiers:
    """The linear classifiers of the inner problem (eq. 10), one per space, with their Adam."""

    def __init__(self, dims: list[int], num_clusters: int, lr: float, device):
        self.layers = [nn.Linear(d, num_clusters).to(device) for d in dims]
        self.optimizer = torch.optim.Adam([p for layer in self.layers for p in layer.parameters()], lr=lr)

    def fit(self, spaces: list[torch.Tensor], labels: torch.Tensor, steps: int) -> list[torch.Tensor]:
        for _ in range(steps):
            self.optimizer.zero_grad(set_to_none=True)
            turtle_inner_loss(self.logits(spaces), labels).backward()
            self.optimizer.step()
        return self.logits(spaces)

    def logits(self, spaces: list[torch.Tensor]) -> list[torch.Tensor]:
        return [layer(z) for layer, z in zip(self.layers, spaces)]


def outer_lr(p: Params, step: int) -> float:
    if p.schedule == "constant":
        return p.outer_lr
    return p.outer_lr * 0.5 * (1 + math.cos(math.pi * step / p.outer_steps))


def train_task_encoder(
    spaces: list[torch.Tensor],
    num_clusters: int,
    p: Params,
    generator: torch.Generator,
    on_row=None,
    state=None,
    start: torch.Tensor | None = None,
    prior: torch.Tensor | None = None,
) -> TaskEncoder:
    """One restart: ``p.outer_steps`` steps of the task encoder on ``spaces`` (the training rows of each space),
    from random heads or from the assignment ``start``, its size term against ``prior`` (``None``: uniform).
    ``on_row(step, row, snapshot)`` is called every ``STEPS_PER_ROW`` steps with the mean of the curves since
    the last row; ``state`` (a snapshot) resumes a run where it was taken."""
    device = spaces[0].device
    dims = [z.shape[1] for z in spaces]
    n = len(spaces[0])
    batch = min(p.batch_size, n)
    encoder = TaskEncoder(dims, num_clusters).to(device)
    if start is not None:
        encoder.start_at(spaces, start, p.init_sharpness)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=p.outer_lr)
    inner = InnerClassifiers(dims, num_clusters, p.inner_lr, device)
    first, sums = 0, np.zeros(4)
    if state is not None:
        first = state["step"]
        encoder.load_state_dict(state["encoder"])
        optimizer.load_state_dict(state["optimizer"])
        for layer, saved in zip(inner.layers, state["inner"]):
            layer.load_state_dict(saved)
        inner.optimizer.load_state_dict(state["inner_optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])  # cold inner starts draw from it

    def snapshot(step: int) -> dict:
        return {
            "step": step,
            "encoder": encoder.state_dict(),
            "optimizer": optimizer.state_dict(),
            "inner": [layer.state_dict() for layer in inner.layers],
            "inner_optimizer": inner.optimizer.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    for step in range(first, p.outer_steps):
        for group in optimizer.param_groups:
            group["lr"] = outer_lr(p, step)
        rows = torch.randperm(n, generator=generator)[:batch].to(device)
        batch_spaces = [z[rows] for z in spaces]
        labels, per_space = encoder(batch_spaces)
        if not p.warm_start:
            inner = InnerClassifiers(dims, num_clusters, p.inner_lr, device)
        inner_logits = inner.fit(batch_spaces, labels, p.inner_steps)
        loss, error, entropy = turtle_outer_loss(inner_logits, labels, per_space, p.gamma, prior)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        used = len(torch.unique(labels.argmax(1)))
        sums += [check_finite_loss(loss.item(), "finetune turtle", 0, step, HINT), error.item(), entropy.item(), used]
        if on_row is not None and ((step + 1) % STEPS_PER_ROW == 0 or step + 1 == p.outer_steps):
            mean, sums[:] = sums / ((step % STEPS_PER_ROW) + 1), 0
            row = {name: float(v) for name, v in zip(("loss", "error", "entropy", "clusters_used"), mean)}
            on_row(step + 1, {f"turtle/{name}": v for name, v in row.items()}, lambda s=step + 1: snapshot(s))
    return encoder


@torch.no_grad()
def label(encoder: TaskEncoder, spaces: list[torch.Tensor], batch_size: int = 8192) -> torch.Tensor:
    """The task encoder's labels (n, K) of every row."""
    n = len(spaces[0])
    return torch.cat([encoder([z[i : i + batch_size] for z in spaces])[0] for i in range(0, n, batch_size)])


def fit_restart(
    spaces: list[torch.Tensor],
    initial: torch.Tensor,
    num_clusters: int,
    p: Params,
    seed: int,
    r: int,
    on_row=None,
    state=None,
    prior: torch.Tensor | None = None,
) -> TaskEncoder:
    """Restart ``r``, seeded by ``seed`` and ``r``: the first starts at the assignment ``initial`` of the
    training rows when ``p.init`` is ``clusters``, the others at random."""
    generator = torch.Generator().manual_seed(seed * 1000 + r)
    torch.manual_seed(seed * 1000 + r)  # the heads' random start
    start = initial if (r == 0 and p.init == "clusters") else None
    return train_task_encoder(spaces, num_clusters, p, generator, on_row, state, start, prior)


def generalisation(spaces: list[torch.Tensor], clusters: np.ndarray, p: Params, seed: int) -> float:
    """The paper's generalisation score of any labelling ``clusters`` of the rows of the (projected) ``spaces``,
    with ``p``'s folds and sample: how a restart is scored, and what a fixed labelling is compared by."""
    return generalisation_score([z.cpu().numpy() for z in spaces], clusters, p.score_folds, p.score_samples, seed)


def scored_labels(encoder: TaskEncoder, spaces: list[torch.Tensor], p: Params, seed: int) -> tuple[np.ndarray, float]:
    """The restart's clusters of the rows of ``spaces`` and its generalisation score on them."""
    clusters = label(encoder, spaces).argmax(1).cpu().numpy()
    return clusters, generalisation(spaces, clusters, p, seed)


def finetune_turtle(run: FinetuneRun) -> FinetuneResult:
    """TURTLE on the training rows, ``restarts`` times; the restart best by ``restart_score`` (each
    restart's clustering judged without labels) labels every row."""
    p, device = run.block, run.device
    torch.manual_seed(run.seed)
    raw_spaces = [run.vectors, *run.more_spaces.values()]
    projections, all_spaces = project_spaces(raw_spaces, run.train, p, run.seed, run.num_clusters, device)
    train_rows = torch.from_numpy(np.flatnonzero(run.train)).to(device)
    spaces = [z[train_rows] for z in all_spaces]
    initial = torch.as_tensor(run.initial_clusters, dtype=torch.long, device=device)[train_rows]
    prior, prior_stats = size_prior(run)
    referee = Referee.of_run(run)
    rows_per_restart = math.ceil(p.outer_steps / STEPS_PER_ROW)
    total_rows = p.restarts * rows_per_restart
    finished: list[dict] = []  # per restart done: its heads and both scores
    restart, state = 0, None
    resumed = run.resume()
    if resumed is not None:
        restart, state, finished = resumed["restart"], resumed["inner_state"], resumed["finished"]

    done = restart * rows_per_restart + (state["step"] // STEPS_PER_ROW if state else 0)
    bar = run.epochs(done, total_rows, "turtle")
    for r in range(restart, p.restarts):

        def on_row(step, row, snapshot, r=r):
            index = r * rows_per_restart + math.ceil(step / STEPS_PER_ROW) - 1
            bar.update(1)
            run.end_epoch(
                index,
                total_rows,
                {**row, "turtle/restart": float(r)},
                lambda: {"restart": r, "inner_state": snapshot(), "finished": finished},
            )

        encoder = fit_restart(spaces, initial, run.num_clusters, p, run.seed, r, on_row, state, prior)
        state = None
        clusters, score = scored_labels(encoder, spaces, p, run.seed)
        neighbour = referee.score(clusters)
        log.info(
            "turtle restart %d: generalisation score %.4f, neighbour score %.4f, %d clusters used",
            *(r, score, neighbour, len(np.unique(clusters))),
        )
        finished.append({"heads": encoder.plain_weights(), "generalisation": score, "neighbour": neighbour})
    bar.close()

    best = int(np.argmax([f[p.restart_score] for f in finished]))
    heads = finished[best]["heads"]
    probs = assign_probabilities(heads, [z.cpu().numpy() for z in all_spaces])
    clusters = probs.argmax(1)
    centres = cluster_means(all_spaces[0].cpu().numpy(), clusters, run.num_clusters)
    return FinetuneResult.from_probabilities(
        probs,
        model={
            "heads": heads,
            "projections": [proj.to_tensors() for proj in projections],
            "centres": torch.from_numpy(centres),
            "spaces": list(run.more_spaces),  # what predict must embed new images in, after the extract stage's
        },
        stats={
            "train_samples": int(len(train_rows)),
            "components": [int(proj.components.shape[1]) for proj in projections],
            "generalisation_scores": [round(f["generalisation"], 4) for f in finished],
            "neighbour_scores": [round(f["neighbour"], 4) for f in finished],
            "restart_score": p.restart_score,
            "best_restart": best,
            "generalisation_score": round(finished[best]["generalisation"], 4),
            **prior_stats,
        },
    )


def assign_probabilities(heads: list[dict], spaces: list[np.ndarray]) -> np.ndarray:
    """Eq. 9 with the kept heads on (projected) spaces: the mean of the heads' softmaxes."""
    per_space = [
        F.softmax(torch.from_numpy(z) @ head["weight"].t() + head["bias"], dim=1) for head, z in zip(heads, spaces)
    ]
    return torch.stack(per_space).mean(0).numpy()


def assign_turtle(model: dict, vectors: np.ndarray | list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """New samples' clusters by the kept task encoder, confidences, and distances to the cluster means
    in the first space's projection. ``vectors``: their features in each space the model was fitted on
    (a list), or in the extract stage's alone."""
    raw = list(vectors) if isinstance(vectors, list | tuple) else [vectors]
    if len(raw) != len(model["projections"]):
        raise ValueError(f"the model was fitted on {len(model['projections'])} spaces, given {len(raw)}")
    spaces = [SpaceProjection.from_tensors(saved)(x) for saved, x in zip(model["projections"], raw)]
    probs = assign_probabilities(model["heads"], spaces)
    clusters = probs.argmax(1)
    return clusters, probs.max(1), distances_to_centres(spaces[0], model["centres"].numpy(), clusters)


METHOD = FinetuneMethod("turtle", finetune_turtle, Params, assign_turtle, uses_spaces=True)
