"""The steps every kind's build shares: select the recipe's source rows, render them into
the kind's rows, bound their length, and split train / validation.

Each is a meddata.steps.Step over Arrow batches; a kind module lists them (with its own
steps, like preference pairing, KTO unpairing or packing) in the order they run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from meddata.steps import Books, SeenKeys, Source, Step, first_seen, key_hashes, seeded_array

_SCALE = float(2**64)
SPEC = "_spec"      # the recipe source a row came from (added by the reader)
TOKENS = "_tokens"  # a row's length in tokens (added by Length when a tokenizer counts)
IDS = "_ids"        # a row's token ids (added by Length for packing)


def fractions(seed: int, tag: str, ids: list[str]) -> np.ndarray:
    """A number in [0, 1) per id, from its seeded hash."""
    return seeded_array(seed, tag, ids).astype(np.float64) / _SCALE


class Select(Step):
    """The recipe's source rows: by split (default: every split but `test`), subset, weight
    and limit, each id once (the first source that has it wins).

    The limit keeps the rows with the lowest seeded hashes of their ids: a first pass over
    the (re-read) shards finds each limited source's threshold, a hash per row."""

    name = "select"
    needs = ("id", "split", "subset", SPEC)
    replayable = True

    def __init__(self, specs: list, seed: int):
        self.specs, self.seed = specs, seed
        self.passes = 2 if any(s.limit is not None for s in specs) else 1
        self.thresholds: dict[int, np.uint64] | None = None

    def _filter(self, batch: pa.RecordBatch, seen: SeenKeys, books: Books | None
                ) -> tuple[int, np.ndarray, list[str]]:
        """(source index, mask of rows kept so far, their ids) for one batch (one source)."""
        i = batch.column(SPEC)[0].as_py()
        spec = self.specs[i]
        n = batch.num_rows
        keep = np.ones(n, bool)
        split, subset = batch.column("split"), batch.column("subset")

        def drop(mask: np.ndarray, reason: str) -> None:
            gone = keep & mask
            if books is not None:
                books.drop(reason, int(gone.sum()))
            keep[gone] = False

        if spec.split is not None:
            drop(~pc.is_in(split, pa.array(spec.split)).fill_null(False).to_numpy(
                zero_copy_only=False), "split_not_selected")
        else:
            drop(pc.equal(split, "test").fill_null(False).to_numpy(zero_copy_only=False),
                 "test_split")
        if spec.subset is not None:
            drop(~pc.equal(subset, spec.subset).fill_null(False).to_numpy(
                zero_copy_only=False), "subset_not_selected")
        ids = batch.column("id").to_pylist()
        if spec.weight < 1:
            where = np.flatnonzero(keep)
            frac = fractions(self.seed, "weight", [ids[k] for k in where])
            out = np.zeros(n, bool)
            out[where[frac >= spec.weight]] = True
            drop(out, "weight_sampled_out")
        where = np.flatnonzero(keep)
        fresh = first_seen(key_hashes(batch.column("id").take(pa.array(where))), seen)
        dup = np.zeros(n, bool)
        dup[where[~fresh]] = True
        drop(dup, "duplicate_id")
        return i, keep, ids

    def _limits(self, source: Source) -> dict[int, float]:
        hashes: dict[int, list[np.ndarray]] = {}
        seen = SeenKeys()
        for batch in source.batches():
            i, keep, ids = self._filter(batch, seen, None)
            if self.specs[i].limit is not None:
                hashes.setdefault(i, []).append(
                    seeded_array(self.seed, "limit", [ids[k] for k in np.flatnonzero(keep)]))
        out = {}
        for i, parts in hashes.items():
            h, limit = np.concatenate(parts), self.specs[i].limit
            if len(h) > limit:
                out[i] = np.partition(h, limit - 1)[limit - 1]  # the limit-th lowest hash
        return out

    def run(self, source: Source, books: Books) -> Iterator[pa.RecordBatch]:
        if self.passes == 2 and self.thresholds is None:
            self.thresholds = self._limits(source)
        seen = SeenKeys()
        for batch in source.batches():
            self.check_columns(batch)
            i, keep, ids = self._filter(batch, seen, books)
            threshold = (self.thresholds or {}).get(i)
            if threshold is not None and keep.any():
                where = np.flatnonzero(keep)
                h = seeded_array(self.seed, "limit", [ids[k] for k in where])
                over = np.zeros(batch.num_rows, bool)
                over[where[h > threshold]] = True
                books.drop("over_limit", int(over.sum()))
                keep &= ~over
            if keep.any():
                out = batch if keep.all() else batch.filter(pa.array(keep))
                yield out.drop_columns([SPEC])


class Render(Step):
    """Canonical rows -> the kind's rows, one Python call per row: `fn(row)` returns the
    output row, or the reason it has none (a drop, with the row in the rejects)."""

    needs = ("id", "source", "lang", "task", "split", "question", "context", "options",
             "answer_label", "answer", "rationale", "response", "meta")

    def __init__(self, name: str, fn: Callable[[dict[str, Any]], dict[str, Any] | str],
                 schema: pa.Schema):
        self.name, self.fn, self.schema = name, fn, schema
        self.adds = tuple(schema.names)

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch | None:
        out, dropped = [], {}
        for row in batch.to_pylist():
            result = self.fn(row)
            if isinstance(result, str):
                dropped.setdefault(result, []).append(row)
            else:
                out.append(result)
        for reason, rows in dropped.items():
            books.drop(reason, rows=rows)
        return pa.RecordBatch.from_pylist(out, schema=self.schema) if out else None


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

    def __init__(self, kind, measure, max_tokens: int | None, drop: bool = True,
                 ids: bool = False):
        self.kind, self.measure, self.max_tokens = kind, measure, max_tokens
        self.drop_long, self.keep_ids = drop, ids
        self.adds = (TOKENS, IDS) if ids else (TOKENS,)
        self.lengths: list[np.ndarray] = []

    def run(self, source: Source, books: Books) -> Iterator[pa.RecordBatch]:
        if not self.keep_ids:
            yield from super().run(source, books)
            return
        # Token ids: the next batch is tokenized on a worker thread (the Rust tokenizer
        # releases the GIL) while the steps after this one pack and write the current one.
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="meddata-tokenize") as pool:
            ahead: deque = deque()  # (batch, its token ids to come): at most two
            for batch in source.batches():
                self.check_columns(batch)
                texts = pl.from_arrow(batch.column("text"))
                ahead.append((batch, pool.submit(self.measure.ids, texts)))
                if len(ahead) == 2:
                    yield from self._with_ids(*ahead.popleft(), books)
            while ahead:
                yield from self._with_ids(*ahead.popleft(), books)

    def _with_ids(self, batch: pa.RecordBatch, ids, books: Books) -> Iterator[pa.RecordBatch]:
        out = self.map(batch, books, ids.result())
        if out is not None and out.num_rows:
            yield out

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
        if self.measure.tok is not None:
            batch = batch.append_column(TOKENS, pa.array(lengths.astype(np.int32)))
        return batch

    def report(self) -> dict[str, Any]:
        lengths = np.concatenate(self.lengths) if self.lengths else np.empty(0, np.int32)
        return {**percentiles(lengths), "counter": self.measure.describe()["counter"]}


class Split(Step):
    """train / validation by a seeded hash of the id (`validation_ratio` of the rows)."""

    name = "split"
    needs = ("id", "split")

    def __init__(self, ratio: float, seed: int):
        self.ratio, self.seed = ratio, seed
        self.validation = 0

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch:
        if self.ratio:
            val = fractions(self.seed, "split", batch.column("id").to_pylist()) < self.ratio
        else:
            val = np.zeros(batch.num_rows, bool)
        self.validation += int(val.sum())
        books.info["validation"] = self.validation
        split = pa.array(np.where(val, "validation", "train"), pa.string())
        return batch.set_column(batch.schema.get_field_index("split"), "split", split)
