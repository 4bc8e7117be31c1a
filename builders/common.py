"""Pieces every kind builder shares."""

from __future__ import annotations

from typing import Any

LINEAGE = ("id", "source", "lang", "task", "split")


def lineage(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in LINEAGE}
