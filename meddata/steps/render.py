"""Render: canonical rows into an output kind's rows, one Python call per row."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

from meddata.steps.base import Books, Step


class Render(Step):
    """Canonical rows -> the kind's rows, one Python call per row: `fn(row)` returns the
    output row, or the reason it has none (a drop, with the row in the rejects)."""

    needs = ("id", "source", "lang", "task", "split", "question", "context", "options",
             "answer_label", "answer", "rationale", "response", "meta")

    parallel = True

    def __init__(self, name: str, fn: Callable[[dict[str, Any]], dict[str, Any] | str],
                 schema: pa.Schema):
        self.name, self.fn, self.schema = name, fn, schema
        self.adds = tuple(schema.names)

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch | None:
        out, dropped = [], {}
        for row in batch.to_pylist():
            result = self.fn(row)
            if isinstance(result, str):
                dropped.setdefault(result, []).append(row)
            else:
                out.append(result)
        for reason, rows in dropped.items():
            books.drop(reason, rows=rows)
        return pa.RecordBatch.from_pylist(out, schema=self.schema) if out else None
