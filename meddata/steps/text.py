"""The text of canonical rows, for steps that read or edit it: every text column (question,
context, answer, rationale, response), each option's text and each dialogue turn's content.

`texts(batch)` gives all of a batch's text values as one flat list with the row each came
from; `edit_texts(batch, fn)` applies `fn` (a list of strings -> a list of strings, so a
library can work on the whole batch at once) to every one of them and rebuilds the batch
with the same schema, returning which rows changed. Null values stay null and are not
passed to `fn`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PLAIN = ("question", "context", "answer", "rationale", "response")
NESTED = (("options", "text"), ("turns", "content"))  # list<struct> column, its text field


@dataclass
class Texts:
    """A batch's text values: `values[i]` came from row `rows[i]`, column `columns[i]`."""

    values: list[str]
    rows: np.ndarray
    columns: list[str]


def _pieces(batch: pa.RecordBatch | pa.Table):
    """(column label, text array, row of each value, a function that puts a new text array
    back into the batch) for each text column the batch has."""
    names = batch.schema.names
    for col in PLAIN:
        if col in names:
            arr = _array(batch.column(col))

            def put(b, new, col=col):
                return b.set_column(b.schema.get_field_index(col), col, new)
            yield col, arr, np.arange(len(arr)), put
    for col, field in NESTED:
        if col not in names:
            continue
        lists = _array(batch.column(col))
        structs = lists.flatten()  # the struct values, in row order (null lists skipped)
        rows = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
        text = structs.field(field)

        def put(b, new, col=col, field=field, lists=lists, structs=structs):
            fields = [structs.field(f.name) if f.name != field else new
                      for f in structs.type]
            rebuilt = pa.StructArray.from_arrays(fields, fields=list(structs.type),
                                                 mask=structs.is_null())
            offsets = lists.offsets
            out = pa.ListArray.from_arrays(offsets, rebuilt, type=lists.type,
                                           mask=lists.is_null())
            return b.set_column(b.schema.get_field_index(col), col, out)
        yield f"{col}.{field}", text, rows, put


def _array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


def texts(batch: pa.RecordBatch | pa.Table) -> Texts:
    """Every non-null text value of the batch, with its row and column."""
    values: list[str] = []
    rows: list[np.ndarray] = []
    columns: list[str] = []
    for label, arr, where, _ in _pieces(batch):
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        vals = arr.filter(pa.array(valid)).to_pylist()
        values += vals
        rows.append(where[valid])
        columns += [label] * len(vals)
    return Texts(values, np.concatenate(rows) if rows else np.empty(0, np.int64), columns)


def row_texts(batch: pa.RecordBatch | pa.Table, sep: str = "\n") -> list[str]:
    """One text per row: its text values joined by `sep`, in column order."""
    found = texts(batch)
    out: list[list[str]] = [[] for _ in range(batch.num_rows)]
    for value, row in zip(found.values, found.rows):
        out[row].append(value)
    return [sep.join(parts) for parts in out]


def edit_texts(batch: pa.RecordBatch, fn: Callable[[list[str]], list[str]]
               ) -> tuple[pa.RecordBatch, np.ndarray, dict[str, int]]:
    """`fn` over every non-null text value: (the batch with the new texts, a mask of the
    rows whose text changed, values changed per column)."""
    changed = np.zeros(batch.num_rows, bool)
    per_column: dict[str, int] = {}
    out = batch
    for label, arr, where, put in _pieces(batch):
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        if not valid.any():
            continue
        old = arr.filter(pa.array(valid)).to_pylist()
        new = fn(old)
        if len(new) != len(old):
            raise ValueError(f"a text edit returned {len(new)} values for {len(old)}")
        diff = np.fromiter((a != b for a, b in zip(old, new)), bool, count=len(old))
        if not diff.any():
            continue
        per_column[label] = int(diff.sum())
        changed[where[valid][diff]] = True
        full = np.empty(len(arr), dtype=object)
        full[valid] = new
        out = put(out, pa.array(full.tolist(), type=arr.type,
                                mask=~valid if not valid.all() else None))
    return out, changed, per_column
