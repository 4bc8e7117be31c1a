"""Retrieval-augmented rows (recipe `retrieve`, `build --retrieve`): the top-k passages of
an index (meddata.retrieval) put before each canonical row's `context`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from meddata.steps.base import Books, Step
from meddata.steps.registry import Settings, SettingsError, setting


@dataclass
class RetrieveSettings(Settings):
    index: str = setting("", "the index version to query (index/NAME[@tag]; required)")
    k: int = setting(3, "passages per row")
    tokens: int | None = setting(512, "at most this many tokens of passages per row (null: "
                                      "no limit)")

    def check(self) -> None:
        if not self.index:
            raise SettingsError("give the index to query: {index: index/NAME, k: 3, "
                                "tokens: 512} (k and tokens optional)")
        if self.k < 1:
            raise SettingsError(f"k must be a positive integer, got {self.k}")
        if self.tokens is not None and self.tokens < 16:
            raise SettingsError(f"tokens must be at least 16 (or null for no limit), got "
                                f"{self.tokens}")


class Retrieve(Step):
    """Adds the top-k passages of an index to each canonical row's `context` (before any
    context it has), for retrieval-augmented training data."""

    name = "retrieve"
    settings_class = RetrieveSettings
    needs = ("id", "question", "options", "context", "lang")
    adds = ("context",)
    parallel = True
    worker_state = ("index",)  # the loaded index: opened in each worker

    def __init__(self, version, k: int = 3, tokens_budget: int | None = 512):
        self.version, self.k, self.budget = version, k, tokens_budget
        self.rows_with_passages = 0

    @classmethod
    def from_settings(cls, settings: RetrieveSettings, context) -> Retrieve:
        version = context.store.resolve(settings.index)
        if version.kind != "index":
            raise ValueError(f"{version.ref}: retrieve needs an index version (meddata "
                             f"index build), not a {version.kind} version")
        return cls(version, settings.k, settings.tokens)

    def parents(self) -> list[dict[str, Any]]:
        return [self.version.as_parent(role="retrieval_index")]

    def setup(self) -> None:
        from meddata.retrieval import Index

        self.index = Index(self.version)

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch:
        from meddata.retrieval import passages_block, query_text

        rows = batch.select(list(self.needs)).to_pylist()
        hits = self.index.query([query_text(r) for r in rows], self.k)
        contexts = []
        for row, found in zip(rows, hits):
            block, used = passages_block(found, row["lang"], self.budget)
            self.rows_with_passages += bool(used)
            contexts.append((block + (row["context"] or "")).strip() or None)
        i = batch.schema.get_field_index("context")
        return batch.set_column(i, "context", pa.array(contexts, pa.string()))

    def take_state(self) -> int:
        state, self.rows_with_passages = self.rows_with_passages, 0
        return state

    def merge_state(self, state: int) -> None:
        self.rows_with_passages += state

    def report(self) -> dict[str, Any]:
        return {"index": self.version.ref, "k": self.k, "tokens": self.budget,
                "rows_with_passages": self.rows_with_passages}


STEP = Retrieve
