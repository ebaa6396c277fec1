"""The whole params.yaml: its sections in order, and docs/parameters.md generated from the schema."""

from __future__ import annotations

import yaml

from imageclust.config import SECTION_KEYS
from imageclust.imports import REPO
from imageclust.schema import SECTIONS, load_all, parameters_reference


def leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_sections_in_params_yaml_order():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert tuple(SECTIONS) == SECTION_KEYS == tuple(k for k in raw if k in SECTIONS)
    gparams, sections = load_all(REPO / "params.yaml")
    assert set(sections) == set(SECTIONS) and gparams.seed == raw["seed"]


def test_the_parameters_reference_is_current():
    committed = (REPO / "docs" / "parameters.md").read_text()
    assert committed == parameters_reference(), (
        "docs/parameters.md is stale: python -m imageclust.schema > docs/parameters.md"
    )


def test_the_reference_names_every_key_of_params_yaml_with_its_default():
    reference = parameters_reference()
    rows = {line.split("|")[1].strip().strip("`"): line for line in reference.splitlines() if line.startswith("| `")}
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for key in leaves(raw):
        assert key in rows, f"{key} is not in the parameters reference"
    assert rows["cluster.k"].split("|")[2].strip() == "`10`"
    assert "`kmeans`" in rows["cluster.method"] and "`hdbscan`" in rows["cluster.method"]  # registry names
    assert "> 0" in rows["finetune.temi.beta"] and "<= 1" in rows["finetune.temi.beta"]
