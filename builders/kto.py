"""kto: unpaired `prompt`, `completion` and boolean `label` (KTOTrainer).

Built from preference pairs (chosen -> label true, rejected -> label false), either built
in the same run from the recipe's sources (the pipeline runs builders/preference.py, bounds
and splits the pairs, then calls `unpair`) or read from an existing preference version
(`from_ref`). KTOTrainer does not shuffle and needs both labels in a batch, so rows are
put in a seeded order and desirable and undesirable rows are interleaved.
"""

from __future__ import annotations

from typing import Any

from meddata.schema import KINDS

from .rejected import seeded

SCHEMA = KINDS["kto"]


def unpair(pairs: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    good, bad = [], []
    for p in pairs:
        base = {k: p[k] for k in ("source", "lang", "task", "split")}
        good.append({"id": f"{p['id']}#chosen", **base, "prompt": p["prompt"],
                     "completion": p["chosen"], "label": True, "rejected_by": None})
        bad.append({"id": f"{p['id']}#rejected", **base, "prompt": p["prompt"],
                    "completion": p["rejected"], "label": False,
                    "rejected_by": p["rejected_by"]})
    good.sort(key=lambda r: seeded(seed, "kto", r["id"]))
    bad.sort(key=lambda r: seeded(seed, "kto", r["id"]))
    out = []
    for i in range(max(len(good), len(bad))):
        out.extend(x[i] for x in (good, bad) if i < len(x))
    return out


def stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    desirable = sum(1 for r in rows if r["label"])
    undesirable = len(rows) - desirable
    return {"desirable": desirable, "undesirable": undesirable,
            "desirable_ratio": round(desirable / len(rows), 4) if rows else None}
