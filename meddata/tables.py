"""Plain-text tables for the command line (no heavy imports)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    rows = [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(out)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def stages_table(stages: list[dict[str, Any]]) -> str:
    def out(s: dict[str, Any]):  # a mix's repeats go on beside its rows (ledger: repeats)
        return f"{s['rows_out']} (+{s['repeats']} repeats)" if s.get("repeats") else \
            s["rows_out"]

    rows = [(s["stage"], s["rows_in"], out(s),
             ", ".join(f"{k}: {v}" for k, v in s["dropped"].items()) or "-") for s in stages]
    if not any(s.get("edited") for s in stages):
        return table(rows, ["stage", "rows in", "rows out", "dropped by reason"])
    rows = [(*r, s.get("rows_changed", 0),
             ", ".join(f"{k}: {v}" for k, v in (s.get("edited") or {}).items()) or "-")
            for r, s in zip(rows, stages)]
    return table(rows, ["stage", "rows in", "rows out", "dropped by reason", "rows changed",
                        "edits"])
