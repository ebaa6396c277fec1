"""Every key of params.yaml, set to a wrong type, to a value out of its range, and with an unknown
name beside it: each is refused with one line that names the key. The cases are generated from
params.yaml and the schema, so a new key is covered the day it is added."""

from __future__ import annotations

import copy
import typing
from pathlib import Path

import annotated_types
import pytest
import yaml
from pydantic import BaseModel

from imageclust.config import GlobalParams, load_globals, load_section, read_params_file
from imageclust.errors import ParamsError
from imageclust.schema import SECTIONS

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.faults
DEFAULTS = yaml.safe_load((REPO / "params.yaml").read_text())


def leaves(tree: dict, prefix: tuple = ()) -> list[tuple[str, ...]]:
    """Paths of the values a user sets: scalars, lists, and method blocks without keys (``none: {}``)."""
    found = []
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            found += leaves(value, (*prefix, key))
        else:
            found.append((*prefix, key))
    return found


KEYS = leaves(DEFAULTS)


def field_of(path: tuple[str, ...]):
    """The schema's FieldInfo of a params path."""
    model: type[BaseModel] = GlobalParams if path[0] in GlobalParams.model_fields else SECTIONS[path[0]]
    parts = path if path[0] in GlobalParams.model_fields else path[1:]
    for part in parts[:-1]:
        model = model.model_fields[part].annotation
    return model.model_fields[parts[-1]]


def wrong_type(value):
    if isinstance(value, bool):
        return "maybe"
    if isinstance(value, (int, float, list)):
        return "abc"
    if isinstance(value, dict):  # a method block
        return "abc"
    return {"not": "a scalar"}  # strings and null


def out_of_range(path: tuple[str, ...]) -> list:
    """Values of the right type outside what the schema allows, the first from its declared bounds or
    choices; empty where any value of the type is allowed (free text, booleans)."""
    field = field_of(path)
    default = DEFAULTS_AT(path)
    for bound in field.metadata:
        if isinstance(bound, (annotated_types.Ge, annotated_types.Gt)):
            low = getattr(bound, "ge", getattr(bound, "gt", None))
            return [(low - 1) if isinstance(low, int) else low - 0.5]
        if isinstance(bound, (annotated_types.Le, annotated_types.Lt)):
            high = getattr(bound, "le", getattr(bound, "lt", None))
            return [high + 1]
        if isinstance(bound, annotated_types.MinLen):
            return [[]]
    if isinstance(default, bool):
        return []
    if isinstance(default, (int, float)):
        return [0, -1]  # bounds checked by a validator of their own (cluster.k >= 2)
    literals = [a for a in typing.get_args(field.annotation) if typing.get_origin(a) is typing.Literal]
    if typing.get_origin(field.annotation) is typing.Literal or literals or isinstance(default, str):
        return ["no-such-choice"]  # a registered name is checked; free text (paths, model names) is not
    if default is None and "list" in str(field.annotation):
        return [[2.0, 1.0], [-1.0, -1.0]]  # [min, max] pairs
    return []


def DEFAULTS_AT(path):  # noqa: N802 (reads like the constant it walks)
    node = DEFAULTS
    for part in path:
        node = node[part]
    return node


def with_value(path: tuple[str, ...], value) -> dict:
    raw = copy.deepcopy(DEFAULTS)
    node = raw
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return raw


def error(raw: dict) -> str | None:
    try:
        load_globals(raw)
        for section in SECTIONS.values():
            load_section(section, raw)
    except ParamsError as err:
        return str(err)
    return None


def test_the_defaults_are_valid():
    assert error(DEFAULTS) is None and len(KEYS) > 150


@pytest.mark.parametrize("path", KEYS, ids=".".join)
def test_wrong_type_names_the_key(path):
    message = error(with_value(path, wrong_type(DEFAULTS_AT(path))))
    assert message is not None, f"{'.'.join(path)} accepted a value of the wrong type"
    assert ".".join(path) in message and "\n" not in message


@pytest.mark.parametrize("path", KEYS, ids=".".join)
def test_unknown_key_beside_it_is_named(path):
    raw = with_value(path, DEFAULTS_AT(path))
    node = raw
    for part in path[:-1]:
        node = node[part]
    node[f"{path[-1]}_typo"] = DEFAULTS_AT(path)
    message = error(raw)
    unknown = ".".join((*path[:-1], f"{path[-1]}_typo"))
    if len(path) == 1:  # top level: read_params_file checks those
        with pytest.raises(ParamsError, match=f"unknown top-level key '{unknown}'"):
            _read(raw)
    else:
        assert message is not None and f"unknown key {unknown}" in message and "\n" not in message


def _read(raw: dict) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(yaml.safe_dump(raw))
        return read_params_file(path)


RANGED = [p for p in KEYS if out_of_range(p)]


@pytest.mark.parametrize("path", RANGED, ids=".".join)
def test_out_of_range_value_names_the_key(path):
    tried = {repr(bad): error(with_value(path, bad)) for bad in out_of_range(path)}
    refused = {bad: message for bad, message in tried.items() if message is not None}
    if not refused and list(tried) == ["'no-such-choice'"]:
        pytest.skip(f"{'.'.join(path)} takes free text")  # e.g. a folder or a hub model name
    assert refused, f"{'.'.join(path)} accepted {', '.join(tried)}"
    for message in refused.values():
        assert ".".join(path) in message and "\n" not in message


def test_cases_tried():
    """The count docs/faults.md reports (every key: a wrong type and an unknown name beside it; every key
    with a range or a set of choices: a value outside it)."""
    assert len(KEYS) * 2 + len(RANGED) > 400
