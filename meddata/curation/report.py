"""What a curation step found, gathered batch by batch and merged across workers.

Every curation step's `report()` returns one dict of this shape (the manifest keeps it
under the step's name, and the data report renders it):

```
{
  "step": "quality",                      # the step's name
  "settings": {...},                      # the settings it ran with (its thresholds)
  "rows_in": 1000, "rows_out": 990,
  "rows_dropped": 10,                     # by every rule together
  "rows_changed": 0,                      # rows with any text edited in place
  "dropped": {"dup_lines": 4, ...},       # rows dropped, by rule
  "edited": {"html": 12, ...},            # text values edited, by fix
  "examples": {
    "dropped": [{"id", "rule", "value", "limit", "text"}, ...],   # the row's text (clipped)
    "edited": [{"id", "column", "fix", "before", "after"}, ...],  # the value before and after
                                          # (fix: every fix that changed it; listed once)
  },
  ...                                     # step facts (language: languages; perplexity: scores)
}
```

Examples are the first `EXAMPLES` per rule (or fix) in input order, so both engines list
the same ones; texts are clipped to `CLIP` characters.
"""

from __future__ import annotations

from typing import Any

EXAMPLES = 3
CLIP = 400


def clip(text: str | None) -> str | None:
    if text is None or len(text) <= CLIP:
        return text
    return text[:CLIP] + "…"


class Tally:
    """Examples per rule/fix and step facts, for `take_state` / `merge_state` / `report`."""

    def __init__(self):
        self.dropped: dict[str, list[dict[str, Any]]] = {}
        self.edited: dict[str, list[dict[str, Any]]] = {}
        self.counts: dict[str, int] = {}   # step facts that add up (languages, unsure)
        self.totals: dict[str, Any] = {}

    def wants(self, kind: str, key: str) -> bool:
        return len(getattr(self, kind).get(key, ())) < EXAMPLES

    def add_drop(self, rule: str, example: dict[str, Any]) -> None:
        if self.wants("dropped", rule):
            self.dropped.setdefault(rule, []).append(
                {**example, "text": clip(example.get("text"))})

    def add_edit(self, fix: str, example: dict[str, Any]) -> None:
        if self.wants("edited", fix):
            self.edited.setdefault(fix, []).append(
                {**example, "before": clip(example["before"]), "after": clip(example["after"])})

    def count(self, key: str, n: int = 1) -> None:
        if n:
            self.counts[key] = self.counts.get(key, 0) + n

    def take(self) -> tuple:
        state = (self.dropped, self.edited, self.counts)
        self.dropped, self.edited, self.counts = {}, {}, {}
        return state

    def merge(self, state: tuple) -> None:
        dropped, edited, counts = state
        for mine, theirs in ((self.dropped, dropped), (self.edited, edited)):
            for key, items in theirs.items():
                have = mine.setdefault(key, [])
                have += items[:EXAMPLES - len(have)]
        for key, n in counts.items():
            self.count(key, n)

    def close(self, books) -> None:
        """The stage's totals from its books (the engine's, summed over workers)."""
        self.totals = {"rows_in": books.rows_in, "rows_out": books.rows_out,
                       "rows_dropped": sum(books.dropped.values()),
                       "rows_changed": books.rows_changed,
                       "dropped": dict(books.dropped), "edited": dict(books.edited)}

    def report(self, step: str, settings: dict[str, Any], **facts: Any) -> dict[str, Any]:
        totals = self.totals or {"rows_in": 0, "rows_out": 0, "rows_dropped": 0,
                                 "rows_changed": 0, "dropped": {}, "edited": {}}
        edited, seen = [], set()
        for items in self.edited.values():   # a value edited by two fixes is listed once
            for e in items:
                if (e["id"], e["column"]) not in seen:
                    seen.add((e["id"], e["column"]))
                    edited.append(e)
        return {"step": step, "settings": settings, **totals,
                "examples": {"dropped": [e for items in self.dropped.values() for e in items],
                             "edited": edited},
                **facts}


class Tallied:
    """A curation step whose report state is its `tally` (a `Tally`): handed over from each
    worker (`take_state`), merged on the driver (`merge_state`), closed into the books and
    reported with the step's settings. Mixed into the step class before `Step`."""

    def take_state(self):
        return self.tally.take()

    def merge_state(self, state) -> None:
        self.tally.merge(state)

    def close(self, books) -> None:
        self.tally.close(books)

    def report(self) -> dict[str, Any]:
        from dataclasses import asdict

        return self.tally.report(self.name, asdict(self.settings))
