"""The step contract: every stage of a build is a step over Arrow record batches.

In the spirit of datatrove's pipeline steps and NeMo Curator's stages:

- A `Step` reads batches from its `Source`, yields batches, says which columns it `needs`
  and `adds`, and reports drops by reason to its `Books` (one stage of the `Ledger`).
  Rows in and rows out are counted by the runner, not by the step; `Ledger.stages()` checks
  `rows_in == rows_out + sum(dropped)` for every stage, and the dropped rows a step hands
  over become the version's rejects.
- A step that needs global knowledge (dedup, the preference pairs of cross_sample, KTO
  interleaving) sets `passes = 2`: it may iterate its source twice, keeping only compact
  per-row state (hashes, ids, lengths, signatures) between the passes, never the rows. The
  runner makes the second pass possible by running the upstream steps again when they
  are all `replayable` (cheap and deterministic, like reading shards and filtering them),
  or else by spilling the first pass to an Arrow file on disk and reading it back.
- A `parallel` step's output batch depends only on its input batch, its settings and what
  its `plan` found; so any engine may run it on any worker. A two-phase parallel step
  (`passes = 2`) turns each batch into compact rows with `scan` (first pass) and builds
  its global state from all of them, in order, with `plan` (once, on the driver); then it
  `map`s. Report state a parallel step gathers per batch (lengths, counts, examples) is
  handed over by `take_state` and summed up by `merge_state`, and `close(books)` writes its
  final facts into its books when the stream ends.
- `run(read, steps, ledger, spill_dir)` chains the steps and returns the last one's
  batches; nothing holds more than a batch of rows, plus each step's compact state. It is
  the local engine; meddata/ray_engine.py runs the same steps on Ray Data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

BATCH_ROWS = 8_192
DUCKDB_MEMORY = "128MB"  # what a step's DuckDB query may hold before it spills to disk


class StepError(Exception):
    """A pipeline that cannot run: a step misses a column it needs, rows not conserved."""


# ---- the ledger -------------------------------------------------------------------------------
class Books:
    """One stage's row accounting: rows in and out (counted by the runner), drops by reason,
    facts for the manifest (`info`), and the dropped rows handed to the reject sink."""

    def __init__(self, name: str, sink: Callable[[list[dict[str, Any]]], None] | None = None):
        self.name = name
        self.rows_in = 0
        self.rows_out = 0
        self.dropped: Counter[str] = Counter()
        self.info: dict[str, Any] = {}
        self.count_out = True  # False for steps whose output rows are not input rows
        self._sink = sink

    def drop(self, reason: str, n: int | None = None,
             rows: list[dict[str, Any]] | pa.RecordBatch | pa.Table | None = None,
             details: list[Any] | None = None, file: str | None = None) -> None:
        """Count `n` dropped rows (or the rows given). Rows given (dicts, or an Arrow batch,
        whose JSON is made in one vectorized call) are written to the rejects with their
        JSON as `raw` and the matching entry of `details` (a dict or text)."""
        if rows is None:
            count = n or 0
        else:
            count = rows.num_rows if isinstance(rows, (pa.RecordBatch, pa.Table)) else len(rows)
        if not count:
            return
        self.dropped[reason] += count
        if rows is None or self._sink is None:
            return
        if isinstance(rows, (pa.RecordBatch, pa.Table)):
            import polars as pl

            frame = pl.from_arrow(rows)
            raws = frame.select(pl.struct(pl.all()).struct.json_encode()).to_series().to_list()
            sources = frame["source"].to_list() if "source" in frame.columns else [None] * count
        else:
            raws = [json.dumps(r, ensure_ascii=False, default=str) for r in rows]
            sources = [r.get("source") for r in rows]
        details = details or [None] * count
        self._sink([{"stage": self.name, "source": src, "file": file, "position": None,
                     "raw": raw, "reason": reason,
                     "detail": d if isinstance(d, str) or d is None else json.dumps(
                         d, ensure_ascii=False, default=str)}
                    for src, raw, d in zip(sources, raws, details)])

    def record(self) -> dict[str, Any]:
        return {"stage": self.name, "rows_in": self.rows_in, "rows_out": self.rows_out,
                "dropped": {k: v for k, v in self.dropped.items() if v}, **self.info}


class Ledger:
    """The books of every stage of one run, in order; `sink` receives reject rows."""

    def __init__(self, sink: Callable[[list[dict[str, Any]]], None] | None = None):
        self.sink = sink
        self._books: list[Books] = []

    def open(self, name: str) -> Books:
        books = Books(name, self.sink)
        self._books.append(books)
        return books

    def stages(self) -> list[dict[str, Any]]:
        """Each stage's record, after checking that it conserved its rows."""
        out = []
        for b in self._books:
            rec = b.record()
            if rec["rows_in"] != rec["rows_out"] + sum(rec["dropped"].values()):
                raise StepError(f"stage {b.name}: rows are not conserved: {rec['rows_in']} in, "
                                f"{rec['rows_out']} out, {sum(rec['dropped'].values())} "
                                f"dropped ({rec['dropped']})")
            out.append(rec)
        return out


# ---- steps and their sources --------------------------------------------------------------------
class Source:
    """A step's input. `batches()` iterates it; a step with `passes = 2` may call it twice."""

    def __init__(self, upstream: Callable[[bool], Iterator[pa.RecordBatch]], replayable: bool,
                 spill_dir: Path, books: Books, passes: int, replay: bool):
        self._upstream, self._replayable = upstream, replayable
        self._spill_dir, self._books = spill_dir, books
        self._passes, self._replay = passes, replay
        self._calls = 0
        self._spill: Path | None = None

    @property
    def spill_dir(self) -> Path:
        """A folder for the step's own spill files (removed when the run ends)."""
        return self._spill_dir

    def batches(self) -> Iterator[pa.RecordBatch]:
        self._calls += 1
        if self._calls == 1:
            it = self._upstream(self._replay)
            spill = self._passes > 1 and not self._replayable
            return self._first(it, spill)
        if self._calls > self._passes:
            raise StepError(f"stage {self._books.name} read its input {self._calls} times but "
                            f"declares passes = {self._passes}")
        if self._replayable:
            return self._upstream(True)
        return _read_spill(self._spill)

    def _first(self, it: Iterator[pa.RecordBatch], spill: bool) -> Iterator[pa.RecordBatch]:
        writer = None
        try:
            for batch in it:
                self._books.rows_in += batch.num_rows
                if spill:
                    if writer is None:
                        self._spill = self._spill_dir / f"spill-{uuid.uuid4().hex}.arrow"
                        writer = pa.ipc.new_file(self._spill, batch.schema, options=pa.ipc.
                                                 IpcWriteOptions(compression="zstd"))
                    writer.write_batch(batch)
                yield batch
        finally:
            if writer is not None:
                writer.close()
        if spill and writer is None:  # nothing came: an empty spill
            self._spill = None


def _read_spill(path: Path | None) -> Iterator[pa.RecordBatch]:
    if path is None:
        return
    with pa.OSFile(str(path)) as source:  # read, not mapped: pages do not pile up in RSS
        reader = pa.ipc.open_file(source)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)


class Step:
    """A stage of a pipeline. Subclasses set `name`, `needs`, `adds` and implement `run`
    (or `map`, for a step that turns each batch into one batch)."""

    name: str = ""
    needs: tuple[str, ...] = ()      # columns it reads
    adds: tuple[str, ...] = ()       # columns it adds (a step that replaces the columns,
    #                                  like a kind's render step, lists what it outputs)
    passes: int = 1                  # 2: reads its source twice (global knowledge)
    replayable: bool = False         # cheap and deterministic: may be run again
    parallel: bool = False           # map-only (scan/plan/map when passes = 2): any worker
    report_key: str | None = None    # the manifest key of its report (default: its name)
    stats_key: str | None = None     # ... or a key inside the manifest's stats
    scan_rows: int = BATCH_ROWS      # rows per `scan` call (text work may like more)

    def run(self, source: Source, books: Books) -> Iterator[pa.RecordBatch]:
        if self.passes == 2:
            self.plan(self._scanned(source.batches()), source.spill_dir)
        for batch in source.batches():
            self.check_columns(batch)
            out = self.map(batch, books)
            if out is not None and out.num_rows:
                yield out
        self.close(books)

    def _scanned(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.Table]:
        """`scan` over the batches, `scan_rows` rows at a time."""
        pending: list[pa.RecordBatch] = []
        for batch in batches:
            self.check_columns(batch)
            pending.append(batch)
            if sum(b.num_rows for b in pending) >= self.scan_rows:
                yield self.scan(pa.Table.from_batches(pending))
                pending = []
        if pending:
            yield self.scan(pa.Table.from_batches(pending))

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch | None:
        raise NotImplementedError(f"step {self.name} implements neither run nor map")

    def scan(self, batch: pa.Table) -> pa.Table:
        """First pass of a two-phase step: the compact per-row state `plan` needs."""
        raise NotImplementedError(f"step {self.name} has passes = 2 but no scan")

    def plan(self, compact: Iterator[pa.Table], spill_dir: Path) -> None:
        """Global state from every `scan` result, in input order (before any `map`);
        `spill_dir` takes its spill files."""
        raise NotImplementedError(f"step {self.name} has passes = 2 but no plan")

    def take_state(self) -> Any:
        """The report state gathered since the last call (then forgotten here), for
        `merge_state` on the driver's copy of the step; None when it keeps none."""
        return None

    def merge_state(self, state: Any) -> None:
        """Add what `take_state` handed over from another copy of this step."""

    def close(self, books: Books) -> None:
        """The stream has ended: write the step's final facts into its books."""

    def check_columns(self, batch: pa.RecordBatch | pa.Table) -> None:
        missing = [c for c in self.needs if c not in batch.schema.names]
        if missing:
            raise StepError(f"step {self.name} needs column(s) {', '.join(missing)}, which "
                            f"the steps before it do not provide (it got: "
                            f"{', '.join(batch.schema.names)})")

    def report(self) -> dict[str, Any]:
        """What the step found, for the manifest (under the step's name); {} for nothing."""
        return {}


def run(read: Callable[[bool], Iterator[pa.RecordBatch]], steps: list[Step], ledger: Ledger,
        spill_dir: Path, replayable: bool = True) -> Iterator[pa.RecordBatch]:
    """Chain `steps` after `read(replay)` (which yields the input batches; `replay` is True
    when it is read again; `replayable` says whether reading again is cheap) and return the
    last step's batches."""
    make = read
    for step in steps:
        make = _stage(step, make, replayable, ledger.open(step.name), spill_dir)
        replayable = replayable and step.replayable
    return make(False)


def _stage(step: Step, upstream, replayable: bool, books: Books, spill_dir: Path):
    def make(replay: bool) -> Iterator[pa.RecordBatch]:
        own = Books(step.name) if replay else books  # a replay's counts are not the stage's
        source = Source(upstream, replayable, spill_dir, own, step.passes, replay)
        return _counted(step.run(source, own), own)
    return make


def _counted(it: Iterator[pa.RecordBatch], books: Books) -> Iterator[pa.RecordBatch]:
    with contextlib.closing(it) if hasattr(it, "close") else contextlib.nullcontext():
        for batch in it:
            if books.count_out:
                books.rows_out += batch.num_rows
            yield batch


# ---- compact per-row state --------------------------------------------------------------------------
def seeded(seed: int, *parts: str) -> int:
    """A deterministic 64-bit number from a seed and strings (no Python hash randomization)."""
    digest = hashlib.blake2b("\x1f".join((str(seed), *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def seeded_array(seed: int, tag: str, values: list[str]) -> np.ndarray:
    """`seeded(seed, tag, v)` for each value, as uint64."""
    prefix = f"{seed}\x1f{tag}\x1f"
    blake = hashlib.blake2b
    return np.fromiter((int.from_bytes(blake((prefix + v).encode(), digest_size=8).digest(),
                                       "big") for v in values),
                       dtype=np.uint64, count=len(values))


class SeenKeys:
    """A set of uint64 keys kept as sorted numpy runs, merged like a binary counter: 8 bytes
    a key, O(log n) runs to probe, O(n log n) in all."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []  # sorted uint64 arrays, longest first

    def contains(self, keys: np.ndarray) -> np.ndarray:
        hit = np.zeros(len(keys), dtype=bool)
        for run_ in self.runs:
            pos = np.minimum(np.searchsorted(run_, keys), len(run_) - 1)
            hit |= run_[pos] == keys
        return hit

    def add(self, keys: np.ndarray) -> None:
        run_ = np.sort(keys)
        while self.runs and len(self.runs[-1]) <= len(run_):
            run_ = np.sort(np.concatenate([self.runs.pop(), run_]), kind="stable")
        if len(run_):
            self.runs.append(run_)


def key_hashes(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """64-bit hashes of string values (polars' hash, stable within a run)."""
    import polars as pl

    return pl.Series(values).hash().to_numpy()


def first_seen(keys: np.ndarray, seen: SeenKeys) -> np.ndarray:
    """For each key: True where it was not in `seen` nor earlier in `keys`; adds them all."""
    import polars as pl

    fresh = ~seen.contains(keys) & pl.Series(keys).is_first_distinct().to_numpy()
    seen.add(keys[fresh])
    return fresh
