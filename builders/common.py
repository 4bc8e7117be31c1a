"""Pieces the kind modules share: lineage columns, the reference answer, system turns."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from meddata.schema import LINEAGE

from . import render

LINEAGE_NAMES = tuple(name for name, _ in LINEAGE)
SHAREGPT_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant", "system_tag": "system"}


def schema(*columns: tuple[str, pa.DataType]) -> pa.Schema:
    """A kind's schema: the lineage columns, then its own."""
    return pa.schema(LINEAGE + list(columns))


def lineage(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in LINEAGE_NAMES}


def answer(row: dict[str, Any], reasoning: str) -> tuple[str | None, str | None]:
    """(the rendered reference answer, None), or (None, why the row has none): documents
    are task_not_applicable, unanswered items no_answer."""
    if row["task"] == "document":
        return None, "task_not_applicable"
    text = render.chosen_text(row, reasoning)
    return (text, None) if text else (None, "no_answer")


def split_system(msgs: list[dict[str, str]]) -> tuple[str | None, list[dict[str, str]]]:
    if msgs and msgs[0]["role"] == "system":
        return msgs[0]["content"], msgs[1:]
    return None, msgs


def with_system(record: dict[str, Any], system: str | None) -> dict[str, Any]:
    return {**record, "system": system} if system else record
