"""Clustering quality on the datasets papers report, end to end through DVC in a fresh clone of HEAD.

Each named configuration is a dataset, a params preset (``presets/``, or the defaults) and the split
it is scored on. One run is a configuration and a seed: ``dvc repro`` stage by stage (wall time and
peak memory of each), then the finetune and evaluate stages again for every other fine-tuning method
on the same features (``finetune.method=...``; the stages before it come from DVC's cache). Each
method's ACC, NMI and ARI come from the evaluate stage; ``kmeans`` is the cluster stage's result.
Methods that train the encoder cannot follow a frozen pretrained backbone and are recorded as such.
Last, every choice automatic on the same features (``cluster.k=auto finetune.method=auto``: the cluster,
finetune and evaluate stages again), once per way ``finetune.auto.score`` can judge the candidates,
recorded under ``automatic`` with the K and the method chosen; the table gives its ACC beside the
best fixed method's on the same seeds.

Results are merged into ``--out`` under ``CONFIG/seedN`` and the table of docs/results.md (between the
``quality:begin`` and ``quality:end`` markers) is rewritten from all results in the file. Usage:
``python benchmarks/quality.py --runs digits/seed0 mnist/seed0 --out benchmarks/results/quality.json``
(``make bench-quality`` runs every configuration and seed: hours on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.common import (  # noqa: E402
    TORCHVISION_ROOT,
    clone,
    evaluated_scores,
    run_benchmarks,
    set_params,
    stages_through,
    timed_stage,
    write_between_markers,
)

CIFAR10_ARCHIVE = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
STAGES = stages_through("evaluate")
METHODS = ("scan", "temi", "turtle", "spectral", "deepcluster")
AUTOMATIC = {"cluster.k": "auto", "finetune.method": "auto"}  # every choice the pipeline can make by itself
AUTOMATIC_SCORES = ("neighbour", "both")  # finetune.auto.score settings measured (the default first)
RESULTS = REPO / "docs" / "results.md"
BEGIN, END = "<!-- quality:begin -->", "<!-- quality:end -->"
AUTO_BEGIN, AUTO_END = "<!-- quality_automatic:begin -->", "<!-- quality_automatic:end -->"
AUTOMATIC_MAX_LOSS = 0.01  # issue 27: every choice automatic loses at most this against the best fixed configuration


@dataclass(frozen=True)
class Config:
    title: str
    dataset: dict
    preset: str | None  # None: params.yaml's defaults
    seeds: tuple[int, ...]
    split: str  # the evaluate stage's split that is scored
    target: float  # mean ACC over the seeds
    worst_target: float | None = None  # the worst seed's ACC
    methods: tuple[str, ...] = METHODS
    extra: dict = field(default_factory=dict)


def _torchvision(name: str) -> dict:
    return {"data.name": name, "data.root": str(TORCHVISION_ROOT), "data.train_splits": ["train", "test"]}


CONFIGS = {
    "digits": Config("digits", {}, None, (0, 1, 2, 3, 4), "all", 0.99, worst_target=0.98),
    "mnist": Config("MNIST", _torchvision("mnist"), "small_gray", (0, 1, 2), "all", 0.99),
    "fashion_mnist": Config("Fashion-MNIST", _torchvision("fashion_mnist"), "small_gray", (0, 1, 2), "all", 0.78),
    # scored on the 10,000 test images, fitted on the 50,000 training images
    "cifar10": Config(
        "CIFAR-10",
        {"data.name": "image_folder", "data.root": str(CIFAR10_ARCHIVE), "data.train_splits": ["train"]},
        "photos_frozen",
        (0,),
        "test",
        0.65,
    ),
}


def parse_setting(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with the value read as YAML, as ``dvc exp run -S`` reads it."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        sys.exit(f"--set {text}: expected KEY=VALUE")
    return key, yaml.safe_load(value)


def finetune_method(project: Path) -> str:
    return json.loads((project / "metrics/finetune.json").read_text())["method"]


def every_choice_automatic(project: Path, split: str, score: str) -> dict:
    """The cluster, finetune and evaluate stages again with ``AUTOMATIC`` and ``finetune.auto.score``
    on the same features (DVC skips the cluster stage the second time): the scores, and what the
    pipeline chose (K, its runner-up and margin, the method)."""
    set_params(project / "params.yaml", {**AUTOMATIC, "finetune.auto.score": score})
    cluster, finetune = timed_stage(project, "cluster"), timed_stage(project, "finetune")
    timed_stage(project, "evaluate")
    clustered = json.loads((project / "metrics/cluster.json").read_text())
    finetuned = json.loads((project / "metrics/finetune.json").read_text())
    return {
        **evaluated_scores(project, "finetune", split),
        "k": clustered["k"],
        "k_runner_up": clustered.get("k_runner_up"),
        "k_margin": clustered.get("k_margin"),
        "method": finetuned.get("chosen", finetuned["method"]),
        "cluster": cluster,
        "finetune": finetune,
    }


def refused(project: Path, method: str) -> str | None:
    """Why ``method`` cannot follow this configuration's extract stage, else None (the check the
    pipeline makes before running)."""
    from imageclust.config import load_params
    from imageclust.errors import ParamsError
    from imageclust.features.params import ExtractParams
    from imageclust.finetune.params import FinetuneParams, check_backbone

    _, extract, finetune = load_params(ExtractParams, FinetuneParams, path=project / "params.yaml")
    try:
        check_backbone(finetune.model_copy(update={"method": method}), extract.backbone)
    except ParamsError:
        return f"{method} trains the encoder; this preset's features come from a frozen {extract.backbone}"
    return None


def run(
    name: str,
    seed: int,
    workdir: Path,
    only: list[str] | None = None,
    settings: dict | None = None,
    automatic_scores: tuple[str, ...] = AUTOMATIC_SCORES,
) -> dict:
    """One configuration and seed; ``only`` restricts the fine-tuning methods rerun after the
    preset's own (the default: all of the configuration's); ``settings`` override params for the
    whole run (recorded with the rest); ``automatic_scores`` the ``finetune.auto.score`` settings of
    the every-choice-automatic step (none: no such step)."""
    from imageclust.preset import load_preset

    config = CONFIGS[name]
    project = clone(workdir, f"{name}-seed{seed}")
    overrides = {
        **(load_preset(config.preset) if config.preset else {}),
        **config.dataset,
        **config.extra,
        **(settings or {}),
        "seed": seed,
    }
    set_params(project / "params.yaml", overrides)
    stages = {stage: timed_stage(project, stage) for stage in STAGES}
    from benchmarks.linear_probe import probe

    linear_probe = probe(project / "artifacts" / "features")  # fitted on train, scored on test
    first = finetune_method(project)
    methods = {
        "kmeans": {**evaluated_scores(project, "cluster", config.split)},
        first: {**evaluated_scores(project, "finetune", config.split), "finetune": stages["finetune"]},
    }
    for method in config.methods:
        if method in methods:
            continue
        if only is not None and method not in only:
            methods[method] = {"not_run": "left out of this run (--methods), to fit its time"}
            continue
        reason = refused(project, method)
        if reason:
            methods[method] = {"not_run": reason}
            continue
        set_params(project / "params.yaml", {"finetune.method": method})
        finetune = timed_stage(project, "finetune")
        timed_stage(project, "evaluate")
        methods[method] = {**evaluated_scores(project, "finetune", config.split), "finetune": finetune}
    automatic = {score: every_choice_automatic(project, config.split, score) for score in automatic_scores}
    return {
        "config": name,
        "dataset": config.title,
        "preset": config.preset,
        "seed": seed,
        "split": config.split,
        "overrides": overrides,
        "stages": stages,
        "linear_probe": linear_probe,
        "methods": methods,
        "automatic": automatic,
    }


def summary_rows(report: dict) -> list[list[str]]:
    """One row per configuration and method: mean and worst ACC over the seeds run, mean NMI and ARI,
    mean seconds of the shared stages and of the method's finetune stage, the largest peak memory."""
    rows = []
    for name, config in CONFIGS.items():
        runs = [r for key, r in sorted(report.items()) if key.startswith(f"{name}/seed")]
        if not runs:
            continue
        methods = dict.fromkeys(m for r in runs for m in r["methods"])
        for method in methods:
            done = [r for r in runs if "acc" in r["methods"].get(method, {})]
            if not done:
                reason = next(r["methods"][method]["not_run"] for r in runs if method in r["methods"])
                rows.append([config.title, config.preset or "defaults", method, f"not run: {reason}", *[""] * 7])
                continue
            acc = [r["methods"][method]["acc"] for r in done]
            shared = statistics.mean(sum(s["seconds"] for k, s in r["stages"].items() if k != "finetune") for r in done)
            finetune = [r["methods"][method]["finetune"]["seconds"] for r in done if "finetune" in r["methods"][method]]
            peak = max(s["peak_mib"] or 0 for r in done for s in r["stages"].values())
            mean = statistics.mean(acc)
            probes = [r["linear_probe"]["linear_probe_acc"] for r in done if "linear_probe" in r]
            met = mean >= config.target and (config.worst_target is None or min(acc) >= config.worst_target)
            met = met and len(done) == len(config.seeds)  # a target is met over every seed it names
            met = " (target met)" if met and method != "kmeans" else ""
            rows.append(
                [
                    config.title,
                    config.preset or "defaults",
                    method,
                    f"{mean:.3f}{met}",
                    f"{min(acc):.3f}",
                    f"{statistics.mean(probes):.3f}" if probes else "",
                    f"{statistics.mean(r['methods'][method]['nmi'] for r in done):.3f}",
                    f"{statistics.mean(r['methods'][method]['ari'] for r in done):.3f}",
                    ", ".join(str(r["seed"]) for r in done),
                    f"{shared / 60:.1f} + {statistics.mean(finetune) / 60:.1f} min"
                    if finetune
                    else f"{shared / 60:.1f} min",
                    f"{peak:,} MiB",
                ]
            )
    return rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table of ``rows`` under ``header``."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def markdown_table(report: dict) -> str:
    header = [
        "dataset",
        "preset",
        "method",
        "ACC (mean)",
        "worst seed",
        "linear probe, same features",
        "NMI",
        "ARI",
        "seeds",
        "time: stages before finetune + finetune",
        "peak memory",
    ]
    return markdown(header, summary_rows(report))


def automatic_rows(report: dict) -> list[list[str]]:
    """One row per configuration and ``finetune.auto.score`` run with every choice automatic: what it
    chose on each seed, its mean ACC, and the best mean ACC on the same seeds and features at the true
    K (each method run, and the preset's own ``auto`` where it has it; the loss is their difference)."""
    rows = []
    for name, config in CONFIGS.items():
        for score in AUTOMATIC_SCORES:
            runs = [
                r
                for key, r in sorted(report.items())
                if key.startswith(f"{name}/seed") and score in r.get("automatic", {})
            ]
            if not runs:
                continue
            fixed = {
                method: statistics.mean(r["methods"][method]["acc"] for r in runs)
                for method in dict.fromkeys(m for r in runs for m in r["methods"])
                if all("acc" in r["methods"].get(method, {}) for r in runs)
            }
            best = max(fixed, key=fixed.get)
            chosen = [r["automatic"][score] for r in runs]
            acc = [c["acc"] for c in chosen]
            loss = fixed[best] - statistics.mean(acc)
            rows.append(
                [
                    config.title,
                    config.preset or "defaults",
                    score,
                    ", ".join(str(r["seed"]) for r in runs),
                    ", ".join(str(c["k"]) for c in chosen),
                    ", ".join(c["method"] for c in chosen),
                    f"{statistics.mean(acc):.3f}",
                    f"{min(acc):.3f}",
                    f"{best} {fixed[best]:.3f}",
                    f"{loss:+.3f}" + (" (bar met)" if loss <= AUTOMATIC_MAX_LOSS else ""),
                ]
            )
    return rows


def automatic_table(report: dict) -> str:
    header = [
        "dataset",
        "preset",
        "method judged by",
        "seeds",
        "K chosen",
        "method chosen",
        "ACC (mean)",
        "worst seed",
        "best fixed method, same seeds",
        "loss against it",
    ]
    return markdown(header, automatic_rows(report))


def write_results_table(report: dict, page: Path = RESULTS) -> None:
    write_between_markers(page, BEGIN, END, markdown_table(report))
    write_between_markers(page, AUTO_BEGIN, AUTO_END, automatic_table(report))


RUNS = {f"{name}/seed{seed}": partial(run, name, seed) for name, config in CONFIGS.items() for seed in config.seeds}

if __name__ == "__main__":
    # --methods M...: rerun only these fine-tuning methods after the preset's own (to fit a time budget;
    #   none given: the preset's own alone);
    # --set KEY=VALUE...: params for every run, e.g. 'finetune.auto.candidates=[none, temi, turtle]';
    # --automatic-scores S...: the every-choice-automatic step's finetune.auto.score settings (none given: no step)
    choose = argparse.ArgumentParser(add_help=False)
    choose.add_argument("--methods", nargs="*", choices=METHODS)
    choose.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE")
    choose.add_argument("--automatic-scores", nargs="*", choices=AUTOMATIC_SCORES, default=list(AUTOMATIC_SCORES))
    chosen, sys.argv[1:] = choose.parse_known_args()
    settings = dict(parse_setting(setting) for setting in chosen.set)
    options = {"only": chosen.methods, "settings": settings, "automatic_scores": tuple(chosen.automatic_scores)}
    runs = {key: partial(run, *run_.args, **options) for key, run_ in RUNS.items()}
    run_benchmarks(__doc__.splitlines()[0], runs, after_each=write_results_table)
