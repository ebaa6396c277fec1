"""What every fine-tuning method gets and gives back, and the services they share: DVCLive curves
that survive a resume, checkpoints every few epochs, a progress bar.

A method is a ``FinetuneMethod`` record in ``registry.py``: ``run(FinetuneRun) -> FinetuneResult``,
its own params block (``finetune.<name>``), how it assigns new samples, and whether it trains the
encoder (and so reads the images). Its loop is a sequence of epochs;
after each it calls ``run.end_epoch(epoch, total, row, state)``, which logs the row of curves and,
every ``finetune.checkpoint_every`` epochs and after the last, saves ``state()`` (model, optimiser,
random generators) so that a killed run resumes there with the same batches and draws as an
uninterrupted one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import NoParams, Section
from ..io import load_torch, save_torch
from ..progress import progress

log = logging.getLogger(__name__)
CHECKPOINT_FILE = "last.pt"
# how a method sorts new samples (``predict``): its saved model and features -> (clusters,
# confidences, distances to the cluster centre); features come from the trained encoder for the
# methods that train it
Assigner = Callable[[dict, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def never(params) -> bool:
    return False


@dataclass(frozen=True)
class FinetuneMethod:
    """One fine-tuning method, as the registry lists it."""

    name: str
    run: Callable[[FinetuneRun], FinetuneResult]
    params: type[Section] = NoParams
    assign: Assigner | None = None  # None: the cluster stage's model assigns new samples
    trains_encoder: Callable[[Any], bool] = never  # of its params block: it trains the encoder on the images
    uses_spaces: bool = False  # it is given the features of extract.spaces too (TURTLE: a head per space)
    uses_referees: bool = False  # it is given those of extract.referees (auto judges its candidates there)
    floored: bool = True  # finetune.floor applies (not to none, auto, or the methods with a guard of their own)


class Curves:
    """One DVCLive step per epoch; a resumed run first re-logs the epochs the killed one had logged
    (``FinetuneRun.resume``). Each method names its curves under its own name (``temi/loss``);
    ``section()`` gives another run in the same folder (``auto``'s next candidate) steps from 0."""

    def __init__(self, live_dir, live=None):
        if live is None:
            from dvclive import Live

            live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False)
        self.live = live
        self.step = 0
        self.history: list[dict] = []

    def log(self, row: dict[str, float]) -> None:
        row = {name: float(value) for name, value in row.items()}  # plain floats: checkpoints load without pickle
        self.live.step = self.step
        for name, value in row.items():
            self.live.log_metric(name, value)
        self.live.next_step()
        self.step += 1
        self.history.append(row)

    def section(self) -> Curves:
        return Curves(None, live=self.live)

    def close(self) -> None:
        self.live.end()


@dataclass
class FinetuneRun:
    """The inputs of one fine-tuning run and its services."""

    vectors: np.ndarray  # (n, d) extracted features of every sample
    labels: np.ndarray  # for diagnostics that say so only (UNLABELED where unknown)
    train: np.ndarray  # bool (n,): the rows of data.train_splits
    initial_clusters: np.ndarray  # the cluster stage's assignment of every row
    initial_confidence: np.ndarray
    num_clusters: int
    params: Any  # FinetuneParams; ``params.block`` is the method's own
    seed: int
    device: torch.device
    prepared_dir: Path | None = None  # methods that train the encoder read the images ...
    encoder_path: Path | None = None  # ... and start from this encoder
    row_images: np.ndarray | None = None  # (n,) the row of images.npy of each feature row
    checkpoint_dir: Path | None = None
    run_id: str = ""
    curves: Curves | None = None
    # extract.spaces by name: (n, d_i) features of the same rows in further representation spaces
    # (TURTLE fits a head per space; the other methods use ``vectors``)
    more_spaces: dict[str, np.ndarray] = field(default_factory=dict)
    # extract.referees by name (guard.RefereeSpace): spaces no method is fitted in, where auto judges
    referee_spaces: dict[str, Any] = field(default_factory=dict)
    encoder_pretrained: bool = True  # pretrain.method is not none: the starting features mean something

    @property
    def block(self):
        return self.params.block

    def guarded(self, guard: bool | None) -> bool:
        """A method's ``guard`` param (``guard.py``); null: on when the encoder was pretrained."""
        return self.encoder_pretrained if guard is None else guard

    def resume(self) -> dict | None:
        """The state of the last checkpoint of this very run (same params, data and code), if any."""
        if self.checkpoint_dir is None:
            return None
        path = Path(self.checkpoint_dir) / CHECKPOINT_FILE
        if not path.exists():
            return None
        try:
            state = load_torch(path)
        except Exception as err:  # a foreign or damaged file: start afresh rather than trust it
            log.warning("ignoring %s: it cannot be loaded safely (%s)", path, str(err).splitlines()[0])
            return None
        if not isinstance(state, dict) or state.get("run_id") != self.run_id:
            log.info("ignoring %s: it belongs to another configuration", path)
            return None
        log.info("resuming %s from %s after epoch %d", self.params.method, path, state["epoch"])
        if self.curves is not None:
            for row in state["history"]:
                self.curves.log(row)
        torch.set_rng_state(state["torch_rng"])
        return state["method"]

    def end_epoch(
        self, epoch: int, total: int, row: dict[str, float], state: Callable[[], dict], last: bool = False
    ) -> None:
        """Log epoch ``epoch`` (0-based) and checkpoint ``state()`` when one is due (``last``: a method
        that stops early says so, and its final state is kept)."""
        if self.curves is not None:
            self.curves.log(row)
        done = epoch + 1
        due = done % self.params.checkpoint_every == 0 or done == total or last
        if self.checkpoint_dir is not None and due:
            save_torch(
                Path(self.checkpoint_dir) / CHECKPOINT_FILE,
                {
                    "run_id": self.run_id,
                    "epoch": done,
                    "history": self.curves.history if self.curves else [],
                    "torch_rng": torch.get_rng_state(),
                    "method": state(),
                },
            )

    def epochs(self, start: int, total: int, desc: str):
        """Epoch numbers from ``start`` with a progress bar."""
        return progress(range(start, total), total=total, initial=start, desc=f"finetune {desc}", unit="epoch")


@dataclass
class FinetuneResult:
    clusters: np.ndarray  # (n,) int64 for every row
    confidence: np.ndarray  # (n,) float32 in [0, 1]
    model: dict[str, Any] = field(default_factory=dict)  # saved as model.pt: state dicts, tensors, numbers
    encoder: nn.Module | None = None  # methods that train the encoder: saved as encoder.pt
    stats: dict = field(default_factory=dict)

    @classmethod
    def from_probabilities(cls, probs: np.ndarray, **kwargs) -> FinetuneResult:
        return cls(clusters=probs.argmax(1).astype(np.int64), confidence=probs.max(1).astype(np.float32), **kwargs)


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """The shuffled batches of one epoch; a last batch of one sample is dropped (batch norm needs two)."""
    order = torch.randperm(n, generator=generator)
    return [order[i : i + batch_size] for i in range(0, n, batch_size) if n - i >= 2]
