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

    With several sources or a limit it is two-phase: `scan` gives each row that passes the
    split, subset and weight filters as (source, id hash, limit hash); `plan` finds, in
    input order, the ids an earlier source already had and each limited source's threshold
    (the limit keeps the rows with the lowest seeded hashes of their ids); `map` filters.
    (Within one source, a canonical version, ids are unique.)"""

    name = "select"
    needs = ("id", "split", "subset", SPEC)
    replayable = True
    parallel = True

    def __init__(self, specs: list, seed: int):
        self.specs, self.seed = specs, seed
        limited = any(s.limit is not None for s in specs)
        self.passes = 2 if limited or len(specs) > 1 else 1
        self.duplicates: dict[int, np.ndarray] = {}  # source -> sorted id hashes to drop
        self.thresholds: dict[int, np.uint64] = {}

    def _filter(self, batch: pa.RecordBatch | pa.Table, books: Books | None
                ) -> tuple[np.ndarray, np.ndarray]:
        """(each row's source index, mask of the rows the filters keep)."""
        spec_of = batch.column(SPEC).to_numpy()
        keep = np.ones(batch.num_rows, bool)
        split, subset = batch.column("split"), batch.column("subset")

        def drop(mask: np.ndarray, reason: str) -> None:
            gone = keep & mask
            if books is not None:
                books.drop(reason, int(gone.sum()))
            keep[gone] = False

        def mask_of(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
            return values.fill_null(False).to_numpy(zero_copy_only=False)

        for i in np.unique(spec_of):
            spec, mine = self.specs[i], spec_of == i
            if spec.split is not None:
                drop(mine & ~mask_of(pc.is_in(split, pa.array(spec.split))),
                     "split_not_selected")
            else:
                drop(mine & mask_of(pc.equal(split, "test")), "test_split")
            if spec.subset is not None:
                drop(mine & ~mask_of(pc.equal(subset, spec.subset)), "subset_not_selected")
            if spec.weight < 1:
                where = np.flatnonzero(keep & mine)
                frac = fractions(self.seed, "weight", batch.column("id").take(
                    pa.array(where)).to_pylist())
                out = np.zeros(batch.num_rows, bool)
                out[where[frac >= spec.weight]] = True
                drop(out, "weight_sampled_out")
        return spec_of, keep

    def _limit_hashes(self, batch, where: np.ndarray) -> np.ndarray:
        return seeded_array(self.seed, "limit", batch.column("id").take(
            pa.array(where)).to_pylist())

    def scan(self, batch: pa.Table) -> pa.Table:
        spec_of, keep = self._filter(batch, None)
        where = np.flatnonzero(keep)
        limited = np.array([s.limit is not None for s in self.specs])[spec_of[where]]
        limit = np.zeros(len(where), np.uint64)
        limit[limited] = self._limit_hashes(batch, where[limited])
        return pa.table({"spec": spec_of[where],
                         "key": key_hashes(batch.column("id").take(pa.array(where))),
                         "limit": limit})

    def plan(self, compact: Iterator[pa.Table], spill_dir) -> None:
        seen = SeenKeys()
        duplicates: dict[int, list[np.ndarray]] = {}
        hashes: dict[int, list[np.ndarray]] = {}
        for part in compact:
            spec_of, keys = part.column("spec").to_numpy(), part.column("key").to_numpy()
            fresh = first_seen(keys, seen)
            limit = part.column("limit").to_numpy()
            for i in np.unique(spec_of):
                mine = spec_of == i
                if (mine & ~fresh).any():
                    duplicates.setdefault(int(i), []).append(keys[mine & ~fresh])
                if self.specs[i].limit is not None:
                    hashes.setdefault(int(i), []).append(limit[mine & fresh])
        self.duplicates = {i: np.unique(np.concatenate(k)) for i, k in duplicates.items()}
        self.thresholds = {}
        for i, parts in hashes.items():
            h, limit = np.concatenate(parts), self.specs[i].limit
            if len(h) > limit:
                self.thresholds[i] = np.partition(h, limit - 1)[limit - 1]  # limit-th lowest

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch | None:
        spec_of, keep = self._filter(batch, books)
        if self.duplicates and keep.any():
            where = np.flatnonzero(keep)
            keys = key_hashes(batch.column("id").take(pa.array(where)))
            dup = np.zeros(batch.num_rows, bool)
            for i, known in self.duplicates.items():
                mine = spec_of[where] == i
                dup[where[mine]] = np.isin(keys[mine], known)
            books.drop("duplicate_id", int(dup.sum()))
            keep &= ~dup
        if self.thresholds and keep.any():
            where = np.flatnonzero(keep)
            over = np.zeros(batch.num_rows, bool)
            for i, threshold in self.thresholds.items():
                mine = where[spec_of[where] == i]
                over[mine[self._limit_hashes(batch, mine) > threshold]] = True
            books.drop("over_limit", int(over.sum()))
            keep &= ~over
        if not keep.any():
            return None
        out = batch if keep.all() else batch.filter(pa.array(keep))
        return out.drop_columns([SPEC])


class Render(Step):
    """Canonical rows -> the kind's rows, one Python call per row: `fn(row)` returns the
    output row, or the reason it has none (a drop, with the row in the rejects)."""

    needs = ("id", "source", "lang", "task", "split", "question", "context", "options",
             "answer_label", "answer", "rationale", "response", "meta")

    parallel = True

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
    parallel = True

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
        self.close(books)

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

    def take_state(self) -> tuple[list[np.ndarray], int, int, int]:
        m, enc = self.measure, getattr(self.measure, "encoder", None)
        state = (self.lengths, m.cache_hits, m.cache_misses, enc.sampled if enc else 0)
        self.lengths, m.cache_hits, m.cache_misses = [], 0, 0
        if enc:
            enc.sampled = 0
        return state

    def merge_state(self, state: tuple[list[np.ndarray], int, int, int]) -> None:
        lengths, hits, misses, sampled = state
        self.lengths += lengths
        self.measure.cache_hits += hits
        self.measure.cache_misses += misses
        if getattr(self.measure, "encoder", None):
            self.measure.encoder.sampled += sampled  # rows checked against tokenizers

    def report(self) -> dict[str, Any]:
        lengths = np.concatenate(self.lengths) if self.lengths else np.empty(0, np.int32)
        return {**percentiles(lengths), "counter": self.measure.describe()["counter"]}


class Split(Step):
    """train / validation by a seeded hash of the id (`validation_ratio` of the rows)."""

    name = "split"
    needs = ("id", "split")
    parallel = True

    def __init__(self, ratio: float, seed: int):
        self.ratio, self.seed = ratio, seed
        self.validation = 0

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch:
        if self.ratio:
            val = fractions(self.seed, "split", batch.column("id").to_pylist()) < self.ratio
        else:
            val = np.zeros(batch.num_rows, bool)
        self.validation += int(val.sum())
        split = pa.array(np.where(val, "validation", "train"), pa.string())
        return batch.set_column(batch.schema.get_field_index("split"), "split", split)

    def take_state(self) -> int:
        state, self.validation = self.validation, 0
        return state

    def merge_state(self, state: int) -> None:
        self.validation += state

    def close(self, books: Books) -> None:
        books.info["validation"] = self.validation
