"""Length: each row's length in tokens, as its kind measures it; rows over `max_tokens`
dropped."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from meddata.steps.base import Books, Source, Step

TOKENS = "_tokens"  # a row's length in tokens (added by Length when a tokenizer counts)
IDS = "_ids"        # a row's token ids (added by Length for packing)


def percentiles(values: np.ndarray) -> dict[str, int]:
    if not len(values):
        return {}
    s = np.sort(values)

    def at(q: float) -> int:
        return int(s[min(len(s) - 1, int(q * len(s)))])
    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": int(s[-1])}


class Length(Step):
    """Each row's length in tokens, measured as the kind says (its chat-templated
    conversation, or its text); rows over `max_tokens` dropped as too_long (not when
    packing, which cuts documents into sequences). With a tokenizer the lengths travel on
    as `_tokens` (validation checks them); `ids=True` also keeps the token ids (`_ids`)."""

    name = "length"
    stats_key = "length_tokens"
    parallel = True

    def __init__(self, kind, measure, max_tokens: int | None, drop: bool = True,
                 ids: bool = False):
        self.kind, self.measure, self.max_tokens = kind, measure, max_tokens
        self.drop_long, self.keep_ids = drop, ids
        self.adds = (TOKENS, IDS) if ids else (TOKENS,)
        self.lengths: list[np.ndarray] = []

    def map_unit(self, batches: Iterator[pa.RecordBatch], books: Books,
                 unit: int) -> Iterator[pa.RecordBatch | None]:
        if not self.keep_ids:
            yield from super().map_unit(batches, books, unit)
            return
        # Token ids: the next batch is tokenized on a second thread (the Rust tokenizer
        # releases the GIL) while the steps after this one pack and write the current one.
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="meddata-tokenize") as pool:
            ahead: deque = deque()  # (batch, its token ids to come): at most two
            for batch in batches:
                texts = pl.from_arrow(batch.column("text"))
                ahead.append((batch, pool.submit(self.measure.ids, texts)))
                if len(ahead) == 2:
                    batch, ids = ahead.popleft()
                    yield self.map(batch, books, ids.result())
            while ahead:
                batch, ids = ahead.popleft()
                yield self.map(batch, books, ids.result())

    def run(self, source: Source, books: Books) -> Iterator[pa.RecordBatch]:
        """On the driver (after a step that cannot run in the workers): the whole stream as
        one unit."""
        self.ready()

        def checked() -> Iterator[pa.RecordBatch]:
            for batch in source.batches():
                self.check_columns(batch)
                yield batch

        for out in self.map_unit(checked(), books, 0):
            if out is not None and out.num_rows:
                yield out
        self.close(books)

    def map(self, batch: pa.RecordBatch, books: Books,
            ids: pa.Array | None = None) -> pa.RecordBatch | None:
        books.info.update(max_tokens=self.max_tokens, **self.measure.describe())
        if self.keep_ids:
            ids = ids if ids is not None else self.measure.ids(pl.from_arrow(batch.column("text")))
            lengths = pc.list_value_length(ids).to_numpy(zero_copy_only=False).astype(np.int64)
            batch = batch.append_column(IDS, ids)
        else:
            lengths = np.asarray(self.kind.length(batch, self.measure), dtype=np.int64)
        if self.drop_long and self.max_tokens is not None:
            long = lengths > self.max_tokens
            if long.any():
                books.drop("too_long", rows=batch.filter(pa.array(long)).drop_columns(
                    [c for c in (IDS,) if c in batch.schema.names]).to_pylist(),
                    details=[{"tokens": int(n), "max_tokens": self.max_tokens}
                             for n in lengths[long]])
                batch, lengths = batch.filter(pa.array(~long)), lengths[~long]
        self.lengths.append(lengths.astype(np.int32))
        if self.measure.has_tokenizer:
            batch = batch.append_column(TOKENS, pa.array(lengths.astype(np.int32)))
        return batch

    def take_state(self) -> tuple[list[np.ndarray], int, int, int, dict[str, Any] | None]:
        m = self.measure
        enc = m._encoder  # (None where this copy measured nothing with a tokenizer)
        described = m.describe() if m._tok is not None else None
        state = (self.lengths, m.cache_hits, m.cache_misses, enc.sampled if enc else 0,
                 described)
        self.lengths, m.cache_hits, m.cache_misses = [], 0, 0
        if enc:
            enc.sampled = 0
        return state

    def merge_state(self, state: tuple[list[np.ndarray], int, int, int,
                                       dict[str, Any] | None]) -> None:
        lengths, hits, misses, sampled, described = state
        self.lengths += lengths
        self.measure.absorb(hits, misses, sampled, described)

    def report(self) -> dict[str, Any]:
        lengths = np.concatenate(self.lengths) if self.lengths else np.empty(0, np.int32)
        return {**percentiles(lengths), "counter": self.measure.describe()["counter"]}
