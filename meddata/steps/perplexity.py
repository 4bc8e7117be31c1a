"""perplexity: score rows with a small causal language model; optionally drop the least
fluent (recipe `curate:`, `meddata curate`). Not in any default list: it loads a model.

Each row's prose is scored by meddata.curation.perplexity (exp of the mean token loss over
its first `max_tokens` tokens, batches grouped by length so a score does not depend on
its batch). With `max_perplexity` rows above it are dropped; with `percentile` the step
reads its input twice: the first pass keeps each row's id hash and score (12 bytes a row),
the cutoff is that percentile of all scores, and the second pass drops the rows above it
by looking their score up. With neither, the step only records the scores' distribution.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from meddata.curation.report import Tally
from meddata.curation.rows import row_parts
from meddata.steps.base import Books, Step
from meddata.steps.keys import key_hashes
from meddata.steps.registry import Settings, SettingsError, setting


@dataclass
class PerplexitySettings(Settings):
    model: str = setting("smollm2-135m-instruct", "a causal LM: a local folder, a meddata "
                         "alias (smollm2-135m-instruct, from the `smol` extra) or a hub id "
                         "when online")
    max_perplexity: float | None = setting(None, "drop rows that score above this")
    percentile: float | None = setting(None, "drop rows above this percentile of the "
                                       "scores (0-100; reads the input twice)")
    max_tokens: int = setting(512, "tokens of each row that are scored")
    batch_size: int = setting(16, "rows per forward pass")
    device: str = setting("cpu", "torch device: cpu, cuda, cuda:1, mps")

    def check(self) -> None:
        if self.max_perplexity is not None and self.percentile is not None:
            raise SettingsError("give max_perplexity or percentile, not both")
        if self.max_perplexity is not None and self.max_perplexity <= 1:
            raise SettingsError(f"max_perplexity must be above 1, got {self.max_perplexity}")
        if self.percentile is not None and not 0 < self.percentile < 100:
            raise SettingsError(f"percentile must be in (0, 100), got {self.percentile}")
        if self.max_tokens < 2 or self.batch_size < 1:
            raise SettingsError("max_tokens must be at least 2 and batch_size at least 1")


class Perplexity(Step):
    """Score each row's perplexity under a small causal LM (offline: any local model) and
    drop rows above a threshold or a percentile; records the scores."""

    name = "perplexity"
    settings_class = PerplexitySettings
    needs = ("id",)
    parallel = True
    worker_state = ("_scorer",)

    def __init__(self, settings: PerplexitySettings):
        self.settings = settings
        self.passes = 2 if settings.percentile is not None else 1
        self.cutoff = settings.max_perplexity
        self._keys = np.empty(0, np.uint64)     # sorted id hashes (percentile mode)
        self._scores = np.empty(0, np.float64)  # their scores
        self.scores: list[np.ndarray] = []      # every score, for the report
        self.tally = Tally()

    @classmethod
    def from_settings(cls, settings: PerplexitySettings, context: Any) -> Perplexity:
        from meddata.models import resolve_model

        resolve_model(settings.model)   # an alias whose package is missing: say so now
        return cls(settings)

    def setup(self) -> None:
        from meddata.curation.perplexity import Scorer

        s = self.settings
        self._scorer = Scorer(s.model, s.max_tokens, s.batch_size, s.device)

    def _score(self, batch: pa.RecordBatch | pa.Table) -> tuple[list[str], np.ndarray]:
        prose, labels = row_parts(batch)
        docs = ["\n".join(parts) or label for parts, label in zip(prose, labels)]
        scores = self._scorer.score(docs)
        return docs, np.array([np.nan if s is None else s for s in scores], np.float64)

    def scan(self, batch: pa.Table) -> pa.Table:
        _, scores = self._score(batch)
        return pa.table({"key": key_hashes(batch.column("id")), "score": scores})

    def plan(self, compact: Iterator[pa.Table], spill_dir: Path) -> None:
        tables = list(compact)
        keys = np.concatenate([t.column("key").to_numpy() for t in tables]) if tables \
            else np.empty(0, np.uint64)
        scores = np.concatenate([t.column("score").to_numpy() for t in tables]) if tables \
            else np.empty(0, np.float64)
        order = np.argsort(keys, kind="stable")
        self._keys, self._scores = keys[order], scores[order]
        valid = scores[~np.isnan(scores)]
        self.cutoff = float(np.percentile(valid, self.settings.percentile,
                                          method="higher")) if len(valid) else None

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch | None:
        if self.passes == 2:
            keys = key_hashes(batch.column("id"))
            where = np.searchsorted(self._keys, keys)
            scores = self._scores[np.minimum(where, len(self._keys) - 1)]
            prose, labels = row_parts(batch)
            docs = ["\n".join(parts) or label for parts, label in zip(prose, labels)]
        else:
            docs, scores = self._score(batch)
        self.scores.append(scores.astype(np.float32))
        if self.cutoff is None:
            return batch
        drop = np.nan_to_num(scores, nan=-np.inf) > self.cutoff
        if not drop.any():
            return batch
        where = np.flatnonzero(drop)
        ids = batch.column("id").to_pylist()
        rule = "perplexity_percentile" if self.passes == 2 else "max_perplexity"
        details = [{"rule": rule, "value": float(scores[i]), "limit": self.cutoff}
                   for i in where.tolist()]
        for i, d in zip(where.tolist(), details):
            self.tally.add_drop(rule, {"id": ids[i], **d, "text": docs[i]})
        books.drop(rule, rows=batch.take(pa.array(where)), details=details)
        return batch.filter(pa.array(~drop))

    def take_state(self):
        state = (self.tally.take(), self.scores)
        self.scores = []
        return state

    def merge_state(self, state) -> None:
        tally, scores = state
        self.tally.merge(tally)
        self.scores += scores

    def close(self, books: Books) -> None:
        self.tally.close(books)
        books.info["perplexity_cutoff"] = self.cutoff

    def report(self) -> dict[str, Any]:
        scores = np.concatenate(self.scores) if self.scores else np.empty(0, np.float32)
        scores = scores[~np.isnan(scores)]
        summary = {"scored": int(len(scores))}
        if len(scores):
            q = np.percentile(scores, [50, 90, 99])
            summary.update(mean=round(float(scores.mean()), 3), p50=round(float(q[0]), 3),
                           p90=round(float(q[1]), 3), p99=round(float(q[2]), 3),
                           max=round(float(scores.max()), 3))
        return self.tally.report(self.name, asdict(self.settings), cutoff=self.cutoff,
                                 scores=summary)


STEP = Perplexity
