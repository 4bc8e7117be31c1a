"""Pieces every kind builder shares."""

from __future__ import annotations

from collections import Counter
from typing import Any

from . import render

LINEAGE = ("id", "source", "lang", "task", "split")


def lineage(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in LINEAGE}


def answerable(rows: list[dict[str, Any]], reasoning: str
               ) -> tuple[list[dict[str, Any]], list[str], Counter]:
    """The rows that have a reference answer, with that answer rendered; documents and
    unanswered items are counted as dropped (task_not_applicable, no_answer)."""
    kept, answers, dropped = [], [], Counter()
    for row in rows:
        if row["task"] == "document":
            dropped["task_not_applicable"] += 1
            continue
        answer = render.chosen_text(row, reasoning)
        if not answer:
            dropped["no_answer"] += 1
            continue
        kept.append(row)
        answers.append(answer)
    return kept, answers, dropped
