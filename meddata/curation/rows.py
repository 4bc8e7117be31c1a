"""A batch's rows as the curation rules read them: each row's prose (the texts judged) and
its labels (options and answer), from meddata.steps.text."""

from __future__ import annotations

import pyarrow as pa

from meddata.steps.text import texts

_PROSE = ("question", "context", "rationale", "response")


def row_parts(batch: pa.RecordBatch | pa.Table) -> tuple[list[list[str]], list[str]]:
    """(each row's prose parts, each row's labels joined): prose is question, context,
    rationale and response, or, for a row with dialogue turns, context, rationale and the
    turns (which hold its question and response already); labels are the options' texts
    and the answer."""
    found = texts(batch)
    n = batch.num_rows
    plain: list[dict[str, str]] = [{} for _ in range(n)]
    turns: list[list[str]] = [[] for _ in range(n)]
    labels: list[list[str]] = [[] for _ in range(n)]
    for value, row, column in zip(found.values, found.rows.tolist(), found.columns):
        if column == "turns.content":
            turns[row].append(value)
        elif column in _PROSE:
            plain[row][column] = value
        else:
            labels[row].append(value)
    prose = []
    for cols, said in zip(plain, turns):
        keys = ("context", "rationale") if said else _PROSE
        parts = [cols[k] for k in keys if cols.get(k)]
        prose.append(parts + [t for t in said if t])
    return prose, [" ".join(x) for x in labels]
