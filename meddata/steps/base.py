"""The step contract: every stage of a build is a step over Arrow record batches.

In the spirit of datatrove's pipeline steps and NeMo Curator's stages:

- A `Step` reads batches from its `Source`, yields batches, says which columns it `needs`
  and `adds`, and reports drops by reason (and edits by rule) to its `Books` (one stage of
  the `Ledger`). Rows in and out are counted by the engine; a step whose output rows are
  not its input rows (KTO unpairing, packing, chunking) sets `books.count_out = False` and
  books its own. `Ledger.stages()` checks `rows_in == rows_out + sum(dropped)` for every
  stage, and the dropped rows a step hands over become the version's rejects.
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
- An `exchange` step reorders rows globally (KTO unpairing's seeded, interleaved order): a
  parallel step whose output rows each carry their place in the whole output, the column
  POSITION (0 .. `exchange_rows()` - 1, each once, known after its `plan`). The engines
  put the rows in that order and drop the column (meddata/engines/units.py: an exchange
  over buckets of positions in the workers; on the driver, a sort by position).
- Engines (meddata/engines/) chain the steps: nothing holds more than a batch of rows,
  plus each step's compact state. Named steps, their typed settings and the registry that
  finds them by name are in meddata/steps/registry.py.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

BATCH_ROWS = 8_192  # rows per batch through the steps
DUCKDB_MEMORY = "128MB"  # what a step's DuckDB query may hold before it spills to disk
POSITION = "_position"  # an exchange step's output rows: their place in the whole output


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
        self.edited: Counter[str] = Counter()  # text changed in place, by rule (or entity)
        self.rows_changed = 0                  # rows with any text changed
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

    def edit(self, rule: str, n: int = 1) -> None:
        """Count `n` edits made by `rule` (text changed in place; the row stays)."""
        if n:
            self.edited[rule] += n

    def record(self) -> dict[str, Any]:
        edits = {"edited": {k: v for k, v in self.edited.items() if v},
                 "rows_changed": self.rows_changed} if self.edited or self.rows_changed else {}
        return {"stage": self.name, "rows_in": self.rows_in, "rows_out": self.rows_out,
                "dropped": {k: v for k, v in self.dropped.items() if v}, **edits, **self.info}


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
        return read_spill(self._spill)

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


def read_spill(path: Path | None) -> Iterator[pa.RecordBatch]:
    """The batches of an Arrow spill file; none when there is no file (nothing was
    spilled)."""
    if path is None or not path.exists():
        return
    with pa.OSFile(str(path)) as source:  # read, not mapped: pages do not pile up in RSS
        reader = pa.ipc.open_file(source)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)


class Step:
    """A stage of a pipeline. Subclasses set `name`, `needs`, `adds` and implement `run`
    (or `map`, for a step that turns each batch into one batch).

    A named step (one a recipe or `meddata curate` lists) also sets `settings_class`, its
    typed settings (meddata.steps.registry.Settings), and is built with
    `from_settings(settings, context)`. Heavy state (a tokenizer, a model, benchmark sets)
    is built by `setup()` in each worker, once, before the step's first scan or map; the
    attributes it sets are named in `worker_state`, which are left out when the step is
    shipped to a worker, so they are never built on the driver and sent."""

    name: str = ""
    settings_class: type | None = None  # the typed settings of a named step
    worker_state: tuple[str, ...] = ()  # attributes `setup` builds (not shipped)
    needs: tuple[str, ...] = ()      # columns it reads
    adds: tuple[str, ...] = ()       # columns it adds (a step that replaces the columns,
    #                                  like a kind's render step, lists what it outputs)
    passes: int = 1                  # 2: reads its source twice (global knowledge)
    replayable: bool = False         # cheap and deterministic: may be run again
    parallel: bool = False           # map-only (scan/plan/map when passes = 2): any worker
    exchange: bool = False           # reorders rows globally: each output row's POSITION
    report_key: str | None = None    # the manifest key of its report (default: its name)
    stats_key: str | None = None     # ... or a key inside the manifest's stats
    scan_rows: int = BATCH_ROWS      # rows per `scan` call (text work may like more)

    @classmethod
    def from_settings(cls, settings: Any, context: Any) -> Step:
        """The step for its typed settings; `context` (meddata.steps.registry.Context) gives
        the store, the recipe's tokenizer measure and the seed. Steps built another way
        (a kind's own steps) do not need it."""
        raise NotImplementedError(f"step {cls.name} is not built from settings")

    def setup(self) -> None:
        """Per-worker heavy state: called once in each process that runs the step, before
        its first `scan` or `map`."""

    def ready(self) -> None:
        """`setup()`, once per copy of the step (engines call it before scan and map)."""
        if not self.__dict__.get("_ready"):
            self.setup()
            self._ready = True

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in (*self.worker_state, "_ready"):
            state.pop(name, None)
        return state

    def run(self, source: Source, books: Books) -> Iterator[pa.RecordBatch]:
        self.ready()
        if self.passes == 2:
            self.begin(source.spill_dir)
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

    def map_unit(self, batches: Iterator[pa.RecordBatch], books: Books,
                 unit: int) -> Iterator[pa.RecordBatch | None]:
        """A parallel step over one read unit's batches, in a worker (meddata/engines/
        units.py): `map` per batch, unless the step works on a unit as a whole (packing
        cuts the documents of one unit into sequences, numbered within `unit`)."""
        for batch in batches:
            yield self.map(batch, books)

    def begin(self, spill_dir: Path) -> None:
        """Before the first `scan` (on the driver, so before the step is shipped to the
        workers): `spill_dir` is the run's spill folder, which every worker sees; a scan
        may leave side files there (say, texts that `plan` only points at) instead of
        sending them back to the driver."""

    def scan(self, batch: pa.Table) -> pa.Table:
        """First pass of a two-phase step: the compact per-row state `plan` needs."""
        raise NotImplementedError(f"step {self.name} has passes = 2 but no scan")

    def plan(self, compact: Iterator[pa.Table], spill_dir: Path) -> None:
        """Global state from every `scan` result, in input order (before any `map`);
        `spill_dir` takes its spill files."""
        raise NotImplementedError(f"step {self.name} has passes = 2 but no plan")

    def exchange_rows(self) -> int:
        """An exchange step, after its `plan`: how many rows it outputs (the positions its
        rows carry are 0 .. that - 1, each once)."""
        raise NotImplementedError(f"step {self.name} is not an exchange step")

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
