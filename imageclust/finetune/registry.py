"""Every fine-tuning method by name: a new method is one module (its ``Params`` and ``METHOD``)
plus one entry here; the schema, the parameters reference, the stage and ``predict`` pick it up."""

from __future__ import annotations

from . import auto, deepcluster, none, scan, spectral, temi, turtle
from .base import FinetuneMethod

METHODS: dict[str, FinetuneMethod] = {
    method.name: method
    for method in (
        scan.METHOD,
        temi.METHOD,
        turtle.METHOD,
        deepcluster.METHOD,
        spectral.METHOD,
        none.METHOD,
        auto.METHOD,
    )
}
auto.METHODS.update(METHODS)  # the candidates auto may fit
