"""The whole of params.yaml: every stage's section, and the checks that need more than one section
or the prepared data. ``check_params`` runs them before any other stage; the parameters reference
(``docs/parameters.md``) is generated from these classes."""

from __future__ import annotations

import sys
import types
import typing

import yaml
from pydantic import BaseModel

from .clustering.params import ClusterParams
from .clustering.stage import check_k_fits
from .config import SECTION_KEYS, GlobalParams, Section, load_globals, load_section, read_params_file
from .data.params import DataParams
from .data.prepared import preparation_key
from .errors import ParamsError
from .evaluate import EvaluateParams, check_report_splits
from .features.params import ExtractParams
from .finetune.params import FinetuneParams, check_backbone
from .plots.params import PlotParams
from .pretrain.params import PretrainParams

SECTIONS: dict[str, type[Section]] = {
    section.key: section
    for section in (
        DataParams,
        PretrainParams,
        ExtractParams,
        ClusterParams,
        FinetuneParams,
        EvaluateParams,
        PlotParams,
    )
}
assert tuple(SECTIONS) == SECTION_KEYS, "config.SECTION_KEYS lists the sections in params.yaml's order"


def load_all(path="params.yaml") -> tuple[GlobalParams, dict[str, Section]]:
    """Every section of ``path``, validated."""
    raw = read_params_file(path)
    return load_globals(raw), {key: load_section(section, raw) for key, section in SECTIONS.items()}


def check_across_sections(sections: dict[str, Section]) -> None:
    """Checks that need two sections at once."""
    check_backbone(sections["finetune"], sections["extract"].backbone)


def check_against_prepared(meta: dict, gparams: GlobalParams, sections: dict[str, Section]) -> None:
    """Checks that need the data (its splits and their sizes), made before any stage runs when the
    prepared data on disk is the one these params make (``meta["prepared_with"]``), so that a bad value
    stops the run before DVC has removed the outputs of the stage that would have read it."""
    data = sections["data"]
    if meta.get("prepared_with") != preparation_key(data, gparams.seed):
        return  # the download stage will prepare other data: the stages check it themselves
    counts = meta["counts"]
    missing = [s for s in data.train_splits if s not in counts]
    if missing:
        raise ParamsError(
            f"params: data.train_splits={data.train_splits} is invalid: the prepared data holds splits {sorted(counts)}"
        )
    check_report_splits(sections["evaluate"].splits, sorted(counts))
    check_k_fits(sections["cluster"], sum(counts[s] for s in data.train_splits))


# ---------------------------------------------------------------- the parameters reference


def _bounds(metadata) -> list[str]:
    import annotated_types

    from .config import OneOf

    words = []
    for item in metadata:
        if isinstance(item, OneOf):
            words.append(", ".join(f"`{name}`" for name in sorted(item.names())))
        for bound, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(item, getattr(annotated_types, bound.capitalize())):
                words.append(f"{sign} {getattr(item, bound)}")
        if isinstance(item, annotated_types.MinLen):
            words.append(f"at least {item.min_length} items")
    return words


def _kinds(annotation, metadata=()) -> list[str]:
    """What a type accepts, in words: one entry per alternative of a union."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return [", ".join(f"`{v}`" for v in args)]
    if origin is typing.Annotated:
        return _kinds(args[0], [*metadata, *annotation.__metadata__])
    if origin in (typing.Union, types.UnionType):
        return [kind for arg in args if arg is not type(None) for kind in _kinds(arg, metadata)]
    bounds = _bounds(metadata)
    if bounds and bounds[0].startswith("`"):  # a registry's names
        return bounds
    name = {bool: "bool", int: "integer", float: "number", str: "text", list: "list"}.get(origin or annotation, "")
    return [" ".join([name, ", ".join(bounds)]).strip() or "see meaning"]


def _allowed(field) -> str:
    optional = type(None) in typing.get_args(field.annotation)
    return ("null or " if optional else "") + " or ".join(_kinds(field.annotation, field.metadata))


def _default(field) -> str:
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        value = value.model_dump()
    return f"`{yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix('...').strip()}`"


def _rows(model: type[BaseModel], prefix: str):
    for name, field in model.model_fields.items():
        key, nested = f"{prefix}{name}", field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            if nested.model_fields:
                yield from _rows(nested, key + ".")
            else:  # a method without knobs: its block is {}
                yield f"| `{key}` | `{{}}` | | {field.description}: no knobs of its own |"
            continue
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        yield f"| `{key}` | {_default(field)} | {_allowed(field)} | {description} |"


def parameters_reference() -> str:
    """``docs/parameters.md``: every key of params.yaml with its default, what it accepts and what it
    does, from the schema (``python -m imageclust.schema > docs/parameters.md``)."""
    lines = [
        "# Parameters (`params.yaml`)",
        "",
        "Generated from the schema by `python -m imageclust.schema > docs/parameters.md` (a test checks that",
        "it is current). Each method's block (`cluster.kmeans`, `finetune.temi`) is defined beside the method;",
        "the stages depend on the chosen block only. `check_params`, the first stage, validates every section",
        "before anything runs: an unknown key, a wrong type, a value out of range or an unregistered name stops",
        "with one line naming the key, and exit code 2.",
        "",
        "| key | default | allowed | meaning |",
        "| --- | --- | --- | --- |",
    ]
    lines += _rows(GlobalParams, "")
    for key, section in SECTIONS.items():
        lines += [
            "",
            f"## `{key}`",
            "",
            section.__doc__.strip().split("\n")[0].replace("``", "`"),
            "",
            "| key | default | allowed | meaning |",
            "| --- | --- | --- | --- |",
            *_rows(section, f"{key}."),
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(parameters_reference())
