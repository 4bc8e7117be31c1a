"""The output kinds, each declared by one module of builders/ as `KIND`.

A `Kind` says everything about an output kind: its name and schema, the steps that build
it from canonical rows, how a row's length is measured, its validation rules and its
LLaMA-Factory export mapping (each training stage names the kind it reads, in its own
module of train/). Three places still know kinds by name: the data report's sample
rendering (meddata/report.py, `render_row`), the token check of `meddata validate`
(validation/run.py, which skips packed pretrain rows) and training's length check
(train/common.py, `length_check`). The CLI choices,
recipe checks, validation, export and train all look kinds up here, so adding a kind is
one module plus its tests and docs (docs/kinds.md shows how). Modules load when a kind is
first asked for; `register` adds one at run time (the tests register a toy kind).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

MODULES = {
    "sft": "meddata.builders.sft",
    "preference": "meddata.builders.preference",
    "kto": "meddata.builders.kto",
    "pretrain": "meddata.builders.pretrain",
    "prompts": "meddata.builders.prompts",
}


@dataclass
class Kind:
    name: str
    description: str
    schema: pa.Schema
    # the steps after selection and clean-up: (recipe, context) -> [Step, ...]
    steps: Callable[..., list]
    # a batch of rows (dicts) and a meddata.length.Measure -> one length per row
    length: Callable[[list[dict[str, Any]], Any], list[int]]
    # validation rules: (bounds) -> [validation.suites.Rule, ...]
    rules: Callable[[Any], list]
    # LLaMA-Factory: (row, layout) -> record, and (file name, layout, has_system) -> entry
    llamafactory_record: Callable[[dict[str, Any], str], dict[str, Any]] | None = None
    llamafactory_entry: Callable[[str, str, bool], dict[str, Any]] | None = None
    # the schema of a build under a given recipe (pretrain with packing adds input_ids)
    schema_for: Callable[[Any], pa.Schema] | None = None
    # kinds a build may start from instead of canonical sources (recipe `from_ref`)
    from_kinds: tuple[str, ...] = ()

    def output_schema(self, recipe) -> pa.Schema:
        return self.schema_for(recipe) if self.schema_for else self.schema


_KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    _KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    _KINDS.pop(name, None)


def names() -> list[str]:
    return sorted({*MODULES, *_KINDS})


def get(name: str) -> Kind:
    """The kind called `name` (its module is imported on first use)."""
    if name not in _KINDS:
        if name not in MODULES:
            raise KeyError(f"unknown kind {name!r}; kinds: {', '.join(names())}")
        module = importlib.import_module(MODULES[name])
        register(module.KIND)
    return _KINDS[name]
