"""The machinery every params section is built with: strict types, registry names, a block per
method, one-line errors and loading. The sections themselves live beside their code
(``clustering/params.py``, each method's ``Params`` in its own module); ``schema.py`` gathers them.

Validation happens before a stage touches anything: an unknown key, a wrong type, a value out of
range or a name that is not registered raises ``ParamsError`` with one line naming the key, the
value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, ValidationError, create_model

from .errors import ParamsError

# the sections of params.yaml, in its order; each stage package defines its own (schema.SECTIONS)
SECTION_KEYS = ("data", "pretrain", "extract", "cluster", "finetune", "evaluate", "plot")

Int = Annotated[int, Strict()]  # YAML gives real integers; refuse `true` or 2.5 where a count is meant
Device = Literal["auto", "cpu", "cuda", "mps"]


class Section(BaseModel):
    """A block of params.yaml: unknown keys are refused, values are frozen once read."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    key: ClassVar[str] = ""  # its place in params.yaml, for the sections a stage loads


class NoParams(Section):
    """A backbone or method without knobs of its own (its block in params.yaml is ``{}``)."""


@dataclass(frozen=True)
class OneOf:
    """Field metadata: the value names an entry of a registry (read by the parameters reference)."""

    names: Callable[[], Iterable[str]]
    what: str


def one_of(names: Callable[[], Iterable[str]], what: str):
    """A string type whose value must be one of ``names()`` (a registry's keys, read at validation)."""

    def check(value: str) -> str:
        allowed = sorted(names())
        if value not in allowed:
            raise ValueError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")
        return value

    return Annotated[str, AfterValidator(check), OneOf(names, what)]


def interval(low: float, high: float | None = None):
    """A ``[min, max]`` pair inside ``[low, high]``, or null."""

    def check(value):
        if value is None:
            return value
        if len(value) != 2 or value[0] > value[1] or value[0] < low or (high is not None and value[1] > high):
            bound = f"[{low}, {high}]" if high is not None else f">= {low}"
            raise ValueError(f"must be [min, max] with min <= max, both {bound}")
        return value

    return Annotated[list[float] | None, AfterValidator(check)]


def with_blocks(name: str, base: type[Section], registry: Mapping[str, Any], doc: str) -> type[Section]:
    """``base`` plus one field per registered method or backbone: its own ``params`` block
    (``cluster.kmeans``, ``finetune.temi``), so that a new registry entry is a new block at once."""
    fields = {
        entry: (record.params, Field(default_factory=record.params, description=f"{doc} `{entry}`"))
        for entry, record in registry.items()
    }
    return create_model(name, __base__=base, __doc__=base.__doc__, **fields)


def _field_annotation(model: type[BaseModel], part: str):
    """The block class of field ``part`` (or of its items, for a list of blocks such as extract.spaces)."""
    annotation = model.model_fields[part].annotation
    if get_origin(annotation) is list:
        annotation = get_args(annotation)[0]
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def format_error(section: type[Section], raw: dict, err: ValidationError) -> str:
    """The first error of ``err`` as one line naming the dotted key, the value and what is allowed."""
    first = err.errors()[0]
    key = ".".join([section.key, *(str(p) for p in first["loc"])])
    if first["type"] == "extra_forbidden":
        model, where = section, section.key
        for part in first["loc"][:-1]:  # a nested block such as extract.dinov2, or a list's item
            model, where = model if isinstance(part, int) else _field_annotation(model, part), f"{where}.{part}"
        allowed = ", ".join(model.model_fields) or "none"
        return f"params: unknown key {key}; allowed keys in {where}: {allowed}"
    value = raw
    for part in first["loc"]:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]  # an item of a list, e.g. data.train_splits.0
        else:
            value = None
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "value_error" and isinstance(value, dict):  # a check across a block's keys
        return f"params: {key} is invalid: {message}"
    return f"params: {key}={value!r} is invalid: {message}"


def read_params_file(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"params: file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"params: {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"params: {path} must hold a mapping of sections")
    unknown = sorted(set(raw) - set(SECTION_KEYS) - set(GlobalParams.model_fields))
    if unknown:
        allowed = ", ".join([*GlobalParams.model_fields, *SECTION_KEYS])
        raise ParamsError(f"params: unknown top-level key {unknown[0]!r}; allowed: {allowed}")
    return raw


def load_section(section: type[Section], raw: dict):
    """Validate ``section``'s part of an already-read params mapping."""
    values = raw.get(section.key) or {}
    if not isinstance(values, dict):
        raise ParamsError(f"params: {section.key} must be a mapping, got {values!r}")
    try:
        return section(**values)
    except ValidationError as err:
        raise ParamsError(format_error(section, values, err)) from None


class GlobalParams(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    seed: Int = Field(0, ge=0, description="seeds the split, initialisation, batches, augmentations and clustering")
    device: Device = Field("auto", description="`auto` picks CUDA, then MPS, then the CPU")


def load_globals(raw: dict) -> GlobalParams:
    try:
        return GlobalParams(**{k: raw[k] for k in GlobalParams.model_fields if k in raw})
    except ValidationError as err:
        first = err.errors()[0]
        key = first["loc"][0]
        raise ParamsError(f"params: {key}={raw.get(key)!r} is invalid: {first['msg']}") from None


def load_params(*sections: type[Section], path: str | Path = "params.yaml"):
    """Read ``params.yaml`` and return ``(globals, section objects...)`` for the given section classes."""
    raw = read_params_file(path)
    return (load_globals(raw), *(load_section(s, raw) for s in sections))


def raw_value(raw: dict, dotted: str, default: Any) -> Any:
    """One key of an already-read params mapping without validating its section (``check_params``
    did), for a stage that reads a single key of another stage's section."""
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node
