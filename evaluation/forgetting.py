"""Medical and general benchmarks side by side: the forgetting check.

Every evaluated item is `medical` or `general`: a converter that reads a benchmark of many
subjects (MMLU, C-Eval, CMMLU) writes each row's `domain` into meta from its subject (the
benchmark's medical subjects, else general); an MMLU row converted before that is medical
when its subject is one of the six medical ones; a row of any other source is medical.
A benchmark is the domain of its items, or `mixed`. The stage table (`meddata eval`) puts
the medical benchmarks first, then the general ones, names each one's domain, and adds a
column per domain with the mean accuracy over its benchmarks; on every model row after
the first, that mean is followed by its change from the first row (the base model) in
points, so a fall in the general column after training is forgetting, read at a glance.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from . import presets

DOMAINS = ("medical", "general")


def row_domain(row: dict[str, Any]) -> str:
    meta = json.loads(row.get("meta") or "{}")
    if meta.get("domain") in DOMAINS:
        return meta["domain"]
    if row.get("source") == "mmlu":
        subject = meta.get("subject") or row.get("subset")
        return "medical" if subject in presets.MMLU_MEDICAL else "general"
    return "medical"


def bench_domain(counts: Counter) -> str:
    """The domain of a benchmark from its items' domains: the one, or `mixed`."""
    found = [d for d in DOMAINS if counts.get(d)]
    return found[0] if len(found) == 1 else ("mixed" if found else "medical")


def ordered(report: dict[str, Any]) -> list[str]:
    """The benchmarks, medical first, then general, then mixed (each group in the order
    given)."""
    first = report["models"][0]["results"] if report["models"] else {}
    rank = {"medical": 0, "general": 1, "mixed": 2}
    return sorted(report["benchmarks"],
                  key=lambda b: rank.get(first.get(b, {}).get("domain", "medical"), 0))


def domain_means(results: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Mean accuracy over the benchmarks of each domain (benchmarks without accuracy, open
    answers only, are left out); None where a domain has none."""
    out: dict[str, float | None] = {}
    for d in DOMAINS:
        accs = [r["accuracy"] for r in results.values()
                if r.get("domain", "medical") == d and "accuracy" in r]
        out[d] = sum(accs) / len(accs) if accs else None
    return out


def summary_cells(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The domain columns' headers and, per model row, their cells: the mean accuracy
    and, after the first row, its change from the first row in points."""
    domains = [d for d in DOMAINS
               if any(domain_means(m["results"])[d] is not None for m in report["models"])]
    if len(domains) < 2:  # one domain: nothing to set side by side
        return [], [[] for _ in report["models"]]
    base = domain_means(report["models"][0]["results"])
    rows = []
    for i, m in enumerate(report["models"]):
        means = domain_means(m["results"])
        cells = []
        for d in domains:
            if means[d] is None:
                cells.append("-")
                continue
            cell = f"{100 * means[d]:.1f}"
            if i and base[d] is not None:
                cell += f" ({100 * (means[d] - base[d]):+.1f})"
            cells.append(cell)
        rows.append(cells)
    return [f"{d} mean" for d in domains], rows
