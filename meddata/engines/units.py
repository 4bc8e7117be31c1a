"""A run as tasks over read units: what both engines share, so they publish the same id.

The input versions' row groups are cut into read units (`plan_units`): runs of consecutive
row groups of about `unit_rows` rows, a number that depends only on the inputs (never on
the workers), so every engine cuts the same units. A task takes one unit through a phase:
the steps from `start` to `end`, reading either the inputs or the unit's spill file of an
earlier phase (or an exchange's bucket, below), and ending in one of four sinks:

- `scan`: the next two-phase step's `scan` of the unit's rows (compact per-row state,
  which the driver reads back in unit order and `plan`s from);
- `spill`: the unit's rows, into an Arrow file of its own in the run's spill folder (when
  the steps before a two-phase step are costly to run twice, or a step that cannot run in
  the workers comes next);
- `exchange`: the unit's rows by bucket of positions (below);
- `shards`: the unit's rows into the version's shards (meddata.store.ShardWriter, the
  files `<split>-<unit>-<n>.parquet` in the publisher's temporary folder), each batch
  checked by the kind's validation first (a worker's own `Checker`).

An exchange step (KTO unpairing) orders rows globally: after its `plan` it knows how many
rows it outputs, and its `map` gives each row its place in the whole output (the column
POSITION, meddata/steps/base.py). The run exchanges them in two maps (`Run.exchange`):

- scatter: each unit through the steps up to and including the exchange step; its rows go
  by bucket of positions (`POSITION // bucket_rows(total)`, so the buckets, like the
  units, depend only on the data) into one Arrow file of the unit's, a record batch per
  bucket, written whenever EXCHANGE_ROWS rows wait; the task returns which batches hold
  which bucket, and the exchange step's books;
- gather: from then on a run's tasks take `Bucket`s where they took units (through
  `Engine.map_units`, so Ray runs them as tasks and the local engine in turn): a task
  reads its bucket's batches from every unit's file, sorts them by position (checking
  that each position of the bucket comes once), drops POSITION and goes on with the steps
  after the exchange step, and writes its shards with the bucket's number as their unit.

A bucket task holds its bucket's rows (about a unit's: at most a shard's); the driver holds
which batches hold which bucket. On the driver (a run with a step that cannot run in the
workers) an exchange step's output is sorted by position instead (`in_position_order`:
DuckDB, out of core).

A task's dropped rows go to an Arrow file of its own in the spill folder (per step and
unit); it returns only its books (rows in and out, drops, edits, facts), its steps'
report state, and for `shards` the shards it wrote with their stats and its checker's
findings. The driver merges those in unit order: the same ledger, reports, rejects and
shards on every engine, whichever worker ran which unit, and a task run again after a
failure replaces its files and is counted once. The driver holds the plans and those
books, never the rows.

An engine only decides where the tasks run: `Engine.map_units(task, units)` gives the
tasks' results in unit order (meddata/engines/local.py: one after another in this
process; meddata/engines/ray.py: Ray Data tasks).
"""

from __future__ import annotations

import contextlib
import math
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from meddata.steps.base import (
    BATCH_ROWS,
    DUCKDB_MEMORY,
    POSITION,
    Books,
    Ledger,
    Step,
    StepError,
    read_spill,
)

TARGET_UNITS = 256  # aim: enough units to keep many workers busy, yet shards not tiny
EXCHANGE_ROWS = 4 * BATCH_ROWS  # rows an exchange task holds before it writes its buckets'


@dataclass(frozen=True)
class Unit:
    """Consecutive row groups of the inputs: (version index, shard path, row group)."""

    n: int
    parts: tuple[tuple[int, str, int], ...]
    rows: int


def unit_rows(total: int) -> int:
    """Rows per read unit for `total` input rows: about TARGET_UNITS units, at least one
    row group (8,192 rows) and at most one shard's rows (499,712) each."""
    from meddata.store import ROW_GROUP_ROWS, SHARD_ROWS

    return min(SHARD_ROWS, max(ROW_GROUP_ROWS, math.ceil(total / TARGET_UNITS)))


def plan_units(versions: list) -> list[Unit]:
    """The read units of `versions`' shards, in order (from the shards' Parquet footers)."""
    import pyarrow.parquet as pq

    groups = []
    for i, v in enumerate(versions):
        for path in v.shard_paths():
            meta = pq.ParquetFile(str(path)).metadata
            groups += [(i, str(path), g, meta.row_group(g).num_rows)
                       for g in range(meta.num_row_groups)]
    target = unit_rows(sum(g[3] for g in groups))
    units: list[Unit] = []
    parts: list[tuple[int, str, int]] = []
    rows = 0
    for i, path, g, n in groups:
        parts.append((i, path, g))
        rows += n
        if rows >= target:
            units.append(Unit(len(units), tuple(parts), rows))
            parts, rows = [], 0
    if parts or not units:
        units.append(Unit(len(units), tuple(parts), rows))
    return units


@dataclass(frozen=True)
class Bucket:
    """An exchange's rows at positions `first` .. `first` + `rows` - 1: the record batches
    `pieces` names, (read unit, the batches' indexes in that unit's exchange file), in unit
    order. After an exchange a run's tasks take buckets where they took read units."""

    n: int
    first: int
    rows: int
    pieces: tuple[tuple[int, tuple[int, ...]], ...]


def bucket_rows(total: int) -> int:
    """Rows per bucket of an exchange of `total` rows: as many as a read unit's, so the
    buckets depend only on the data."""
    return unit_rows(total)


@dataclass
class Phase:
    """Steps `start`..`end`-1 over every unit, from `source` (None: the inputs; else the
    spill folder of an earlier phase), into `sink` ("scan": then steps[end]'s scan;
    "spill": a spill folder; "exchange": an exchange folder, steps[end - 1] being an
    exchange step; "shards": the version's shards). `gather`: `source` is an exchange
    folder and the items are its Buckets. `steps` are what the engine shipped
    (`Engine.ship`), one per step of the run."""

    steps: list[Any]
    start: int
    end: int
    sink: str
    spill_dir: str
    columns: list[str] | None = None
    tag: Callable | None = None
    source: str | None = None
    gather: bool = False
    target: str | None = None       # spill, exchange: the folder; shards: the publisher's folder
    bucket_rows: int = 0            # exchange: rows per bucket of positions
    schema: pa.Schema | None = None  # shards: the version's schema
    check: Any = None                # shards: an empty Checker to spawn per unit
    book: bool = True                # the books, report state and rejects count
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])


def run_unit(phase: Phase, unit: Unit | Bucket,
             unbox: Callable[[Any], Step]) -> dict[str, Any]:
    """One task: `unit` (a read unit, or an exchange's bucket) through `phase`. Returns its
    books and what its sink made."""
    steps = [unbox(box) for box in phase.steps[phase.start:phase.end + (
        1 if phase.sink == "scan" else 0)]]
    for step in steps:
        step.ready()
    chain, scanner = (steps[:-1], steps[-1]) if phase.sink == "scan" else (steps, None)
    rejects = _Rejects(Path(phase.spill_dir), unit.n, phase.run_id) if phase.book else None
    books = [Books(step.name, rejects.sink(phase.start + k) if rejects else None)
             for k, step in enumerate(chain)]
    batches = _read(phase, unit)
    for step, b in zip(chain, books):
        batches = _through(step, batches, b, unit.n)
    result: dict[str, Any] = {"unit": unit.n}
    try:
        if scanner is not None:
            result["scanned"] = list(_scan(scanner, batches))
        elif phase.sink == "spill":
            _spill(batches, Path(phase.target) / f"{unit.n:09d}.arrow")
        elif phase.sink == "exchange":
            result["buckets"] = _scatter(batches, Path(phase.target) / f"{unit.n:09d}.arrow",
                                         phase.bucket_rows)
        else:
            result.update(_write(phase, unit, batches))
    finally:
        if rejects is not None:
            rejects.close()
    result["books"] = [{"rows_in": b.rows_in, "rows_out": b.rows_out,
                        "dropped": dict(b.dropped), "edited": dict(b.edited),
                        "rows_changed": b.rows_changed, "info": b.info,
                        "count_out": b.count_out, "state": step.take_state()}
                       for step, b in zip(chain, books)]
    if scanner is not None:
        scanner.take_state()  # a scan's copy gathers nothing the report counts
    return result


def _read(phase: Phase, unit: Unit | Bucket) -> Iterator[pa.RecordBatch]:
    if phase.gather:
        yield from _gather(Path(phase.source), unit)
        return
    if phase.source is not None:
        yield from read_spill(Path(phase.source) / f"{unit.n:09d}.arrow")
        return
    import pyarrow.parquet as pq

    files: dict[str, pq.ParquetFile] = {}
    for i, path, g in unit.parts:
        if path not in files:
            files = {path: pq.ParquetFile(path)}
        table = files[path].read_row_group(g, columns=phase.columns)
        for batch in table.to_batches(max_chunksize=BATCH_ROWS):
            yield phase.tag(i, batch) if phase.tag else batch


def _through(step: Step, batches: Iterator[pa.RecordBatch], books: Books,
             unit: int) -> Iterator[pa.RecordBatch]:
    """`step` over a unit's batches, its rows in and out counted in `books`."""
    def counted_in() -> Iterator[pa.RecordBatch]:
        for batch in batches:
            books.rows_in += batch.num_rows
            step.check_columns(batch)
            yield batch

    for out in step.map_unit(counted_in(), books, unit):
        if out is None or not out.num_rows:
            continue
        if books.count_out:
            books.rows_out += out.num_rows
        yield out


def _scan(step: Step, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.Table]:
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        step.check_columns(batch)
        pending.append(batch)
        held += batch.num_rows
        if held >= step.scan_rows:
            yield step.scan(pa.Table.from_batches(pending))
            pending, held = [], 0
    if pending:
        yield step.scan(pa.Table.from_batches(pending))


class _ArrowFile:
    """An Arrow file (zstd) written under a temporary name and renamed when complete, so a
    task run again replaces it whole; no file when nothing was written."""

    def __init__(self, path: Path):
        self.path, self.batches = path, 0
        self.tmp = path.with_name(path.name + f".{uuid.uuid4().hex[:8]}.part")
        self.writer = None

    def write(self, batch: pa.RecordBatch) -> int:
        """Append `batch`; its index in the file."""
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pa.ipc.new_file(self.tmp, batch.schema, options=pa.ipc.
                                          IpcWriteOptions(compression="zstd"))
        self.writer.write_batch(batch)
        self.batches += 1
        return self.batches - 1

    def close(self) -> None:
        if self.writer is None:
            self.path.unlink(missing_ok=True)  # (a run of this task before may have left one)
            return
        self.writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.tmp.unlink(missing_ok=True)


def _spill(batches: Iterator[pa.RecordBatch], path: Path) -> None:
    out = _ArrowFile(path)
    try:
        for batch in batches:
            out.write(batch)
    except BaseException:
        out.abort()
        raise
    out.close()


def _scatter(batches: Iterator[pa.RecordBatch], path: Path,
             size: int) -> list[tuple[int, tuple[int, ...], int]]:
    """An exchange step's output rows of one unit into one Arrow file at `path`, each record
    batch the rows of one bucket (POSITION // `size`); rows wait per bucket until
    EXCHANGE_ROWS rows wait in all. Returns (bucket, its batches' indexes, its rows) for
    each bucket the unit has rows in, in bucket order."""
    out = _ArrowFile(path)
    waiting: dict[int, list[pa.RecordBatch]] = {}
    written: dict[int, list[int]] = {}
    rows: dict[int, int] = {}
    held = 0

    def flush() -> None:
        for b in sorted(waiting):
            table = pa.Table.from_batches(waiting[b]).combine_chunks()
            written.setdefault(b, []).append(out.write(table.to_batches()[0]))
        waiting.clear()

    try:
        for batch in batches:
            for b, part in _by_bucket(batch, size):
                waiting.setdefault(b, []).append(part)
                rows[b] = rows.get(b, 0) + part.num_rows
                held += part.num_rows
            if held >= EXCHANGE_ROWS:
                flush()
                held = 0
        flush()
    except BaseException:
        out.abort()
        raise
    out.close()
    return [(b, tuple(written[b]), rows[b]) for b in sorted(written)]


def _by_bucket(batch: pa.RecordBatch, size: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    """`batch`'s rows by bucket of their positions, (bucket, its rows) in bucket order."""
    if not batch.num_rows:
        return
    buckets = batch.column(POSITION).to_numpy() // size
    order = np.argsort(buckets, kind="stable")
    ordered = buckets[order]
    taken = batch.take(pa.array(order))
    cuts = [0, *(np.flatnonzero(ordered[1:] != ordered[:-1]) + 1).tolist(), len(order)]
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        yield int(ordered[lo]), taken.slice(lo, hi - lo)


def _gather(folder: Path, bucket: Bucket) -> Iterator[pa.RecordBatch]:
    """A bucket's rows from every unit's exchange file in `folder`, in position order,
    without POSITION (the task holds the bucket's rows: about a read unit's)."""
    parts: list[pa.RecordBatch] = []
    for unit, indexes in bucket.pieces:
        with pa.OSFile(str(folder / f"{unit:09d}.arrow")) as source:
            reader = pa.ipc.open_file(source)
            parts += [reader.get_batch(i) for i in indexes]
    if not parts:
        return
    table = pa.Table.from_batches(parts)
    positions = table.column(POSITION).to_numpy()
    order = np.argsort(positions, kind="stable")
    if not np.array_equal(positions[order], np.arange(bucket.first, bucket.first + len(order))):
        raise StepError(f"an exchange's bucket {bucket.n} holds positions other than "
                        f"{bucket.first} .. {bucket.first + bucket.rows - 1}, each once")
    del parts
    table = table.drop_columns([POSITION]).combine_chunks()  # one chunk: each take is cheap
    for lo in range(0, len(order), BATCH_ROWS):
        yield from table.take(pa.array(order[lo:lo + BATCH_ROWS])).to_batches()


def in_position_order(step: Step, batches: Iterator[pa.RecordBatch],
                      spill_dir: Path) -> Iterator[pa.RecordBatch]:
    """An exchange step's output put in order in one process (a run on the driver, after a
    step that cannot run in the workers): its rows by POSITION, without that column. The
    rows go to a Parquet spill in `spill_dir`; DuckDB sorts it, out of core past
    DUCKDB_MEMORY."""
    import duckdb
    import pyarrow.parquet as pq

    path = spill_dir / f"exchange-{uuid.uuid4().hex}.parquet"
    writer = None
    try:
        for batch in batches:
            if writer is None:
                writer = pq.ParquetWriter(path, batch.schema)
            writer.write_batch(batch)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        return
    schema = writer.schema.remove(writer.schema.get_field_index(POSITION))
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
    con.execute("SET temp_directory = ?", [str(spill_dir)])
    table = f"read_parquet('{str(path).replace(chr(39), chr(39) * 2)}')"
    (rows, distinct, low, high), = con.sql(f'SELECT count(*), count(DISTINCT "{POSITION}"), '
                                           f'min("{POSITION}"), max("{POSITION}") FROM {table}'
                                           ).fetchall()
    if not rows == distinct == step.exchange_rows() or (low, high) != (0, rows - 1):
        raise StepError(f"step {step.name} gave {rows} rows at {distinct} positions from "
                        f"{low} to {high}, where its plan said 0 .. "
                        f"{step.exchange_rows() - 1}, each once")
    reader = con.sql(f'SELECT * EXCLUDE ("{POSITION}") FROM {table} ORDER BY "{POSITION}"'
                     ).to_arrow_reader(BATCH_ROWS)
    for batch in reader:
        yield pa.RecordBatch.from_arrays([batch.column(f.name).cast(f.type) for f in schema],
                                         schema=schema)


def _write(phase: Phase, unit: Unit | Bucket,
           batches: Iterator[pa.RecordBatch]) -> dict[str, Any]:
    from meddata.store import ShardWriter

    writer = ShardWriter(Path(phase.target), phase.schema, unit=unit.n)
    checker = phase.check.spawn() if phase.check is not None else None
    try:
        for batch in batches:
            if checker is not None:
                checker.feed(batch)
            writer.write(batch)
        written = writer.close()
    except BaseException:
        writer.abort()
        raise
    return {"written": written, "checked": checker.partial() if checker else None}


class _Rejects:
    """A task's dropped rows, a file per step: `rejects-<step>-<unit>.arrow`."""

    def __init__(self, folder: Path, unit: int, run_id: str):
        self.folder, self.unit, self.run_id = folder, unit, run_id
        self.writers: dict[int, Any] = {}

    def path(self, k: int) -> Path:
        return self.folder / f"rejects-{self.run_id}-{k:04d}-{self.unit:09d}.arrow"

    def sink(self, k: int) -> Callable[[list[dict[str, Any]]], None]:
        from meddata.schema import REJECTS

        def write(rows: list[dict[str, Any]]) -> None:
            if k not in self.writers:
                tmp = self.path(k).with_suffix(".part")
                self.writers[k] = (tmp, pa.ipc.new_file(tmp, REJECTS))
            self.writers[k][1].write_table(pa.Table.from_pylist(rows, schema=REJECTS))
        return write

    def close(self) -> None:
        for k, (tmp, writer) in sorted(self.writers.items()):
            writer.close()
            os.replace(tmp, self.path(k))


# ---- the driver --------------------------------------------------------------------------------
def all_parallel(steps: list[Step]) -> bool:
    """Whether every step runs in the workers, so the workers write the shards."""
    return all(step.parallel for step in steps)


class Run:
    """The driver's side of a run of `steps` over `read` (a VersionReader, maybe in a
    ProgressReader) on `engine`: plans the units, runs the phases, merges the tasks' books
    into `ledger` in unit order. Every step given runs in the workers (see all_parallel)."""

    def __init__(self, engine, read, steps: list[Step], ledger: Ledger, spill_dir: Path):
        self.engine, self.steps, self.ledger = engine, steps, ledger
        self.spill_dir = Path(spill_dir)
        # a ProgressReader wraps the VersionReader: its bar counts each pass over the inputs
        self.reader, self.progress = (read.reader, read) if hasattr(read, "reader") \
            else (read, None)
        if not hasattr(self.reader, "versions"):
            raise TypeError("a run over units reads store versions (a meddata.engines."
                            "VersionReader), not an arbitrary batch iterator")
        self.units = plan_units(self.reader.versions)
        self.books = [ledger.open(step.name) for step in steps]
        self.shipped: list[Any] = []
        self.start, self.source, self.gathering = 0, None, False
        self.items: list[Any] = list(self.units)  # what the tasks take: units, then buckets

    def phase(self, end: int, sink: str, book: bool, **more: Any) -> Phase:
        return Phase(list(self.shipped), self.start, end, sink, str(self.spill_dir),
                     self.reader.columns, self.reader.tag, self.source, self.gathering,
                     book=book, **more)

    def prepare(self) -> None:
        """Ship every step to the workers, planning each two-phase step first (from its
        scan of every unit), and spilling the units' rows before it where the steps before
        it are costly to run twice; an exchange step's rows are exchanged at once."""
        for k, step in enumerate(self.steps):
            if step.passes == 2:
                if not all(s.replayable for s in self.steps[self.start:k]):
                    self.spill(k)
                step.begin(self.spill_dir)
                self.shipped.append(self.engine.ship(step))  # to scan
                scanned = (t for r in self.map(self.phase(k, "scan", False))
                           for t in r["scanned"] if t.num_rows)
                step.plan(scanned, self.spill_dir)
                self.shipped[k] = self.engine.ship(step)  # with its plan
            else:
                self.shipped.append(self.engine.ship(step))
            if step.exchange:
                self.exchange(k)

    def spill(self, end: int) -> None:
        """The units through steps start..end-1 into spill files (booked), read from there
        on."""
        target = self.spill_dir / f"stage-{end:04d}"
        target.mkdir(parents=True, exist_ok=True)
        self.absorb(self.map(self.phase(end, "spill", True, target=str(target))))
        self.start, self.source, self.gathering = end, str(target), False

    def exchange(self, k: int) -> None:
        """The items through steps start..k (k an exchange step), each into an exchange file
        of its own, bucket by bucket of positions (booked); from then on the tasks take the
        buckets, each read in position order from every unit's file."""
        step = self.steps[k]
        total = step.exchange_rows()
        size = bucket_rows(total)
        count = max(1, math.ceil(total / size))
        target = self.spill_dir / f"exchange-{k:04d}"
        target.mkdir(parents=True, exist_ok=True)
        pieces: list[list[tuple[int, tuple[int, ...]]]] = [[] for _ in range(count)]
        held = [0] * count

        def take(result: dict[str, Any]) -> None:
            for b, indexes, rows in result["buckets"]:
                if not 0 <= b < count:
                    raise StepError(f"step {step.name} gave a row a position outside 0 .. "
                                    f"{total - 1}")
                pieces[b].append((result["unit"], indexes))
                held[b] += rows

        self.absorb(self.map(self.phase(k + 1, "exchange", True, target=str(target),
                                        bucket_rows=size)), take)
        if held != [min(size, total - b * size) for b in range(count)]:
            raise StepError(f"step {step.name} gave {sum(held)} rows where its plan said "
                            f"{total}, at positions 0 .. {total - 1}, each once")
        self.items = [Bucket(b, b * size, held[b], tuple(pieces[b])) for b in range(count)]
        self.start, self.source, self.gathering = k + 1, str(target), True

    def map(self, phase: Phase) -> Iterator[dict[str, Any]]:
        """The tasks' results, in order of their items (read units, or an exchange's
        buckets); a pass over the inputs is counted on the bar."""
        counted = self.progress is not None and phase.source is None
        with self.progress.bar() if counted else contextlib.nullcontext() as bar:
            for result in self.engine.map_units(phase, self.items):
                if bar is not None:
                    bar.update(self.items[result["unit"]].rows)
                yield result

    def absorb(self, results: Iterator[dict[str, Any]],
               each: Callable[[dict[str, Any]], None] | None = None) -> None:
        """The tasks' books into the ledger and their states into the driver's steps, in
        unit order (`each` sees every result too)."""
        for result in results:
            for k, t in enumerate(result["books"], start=self.start):
                b = self.books[k]
                b.rows_in += t["rows_in"]
                b.rows_out += t["rows_out"]
                b.dropped.update(t["dropped"])
                b.edited.update(t["edited"])
                b.rows_changed += t["rows_changed"]
                b.info.update(t["info"])
                b.count_out = b.count_out and t["count_out"]
                if t["state"] is not None:
                    self.steps[k].merge_state(t["state"])
            if each is not None:
                each(result)

    def finish(self) -> None:
        """Close the steps and put their tasks' dropped rows into the ledger's sink, step by
        step, unit by unit."""
        for step, b in zip(self.steps, self.books):
            step.close(b)
        if self.ledger.sink is None:
            return
        for path in sorted(self.spill_dir.glob("rejects-*.arrow"),
                           key=lambda p: p.name.split("-", 2)[2]):
            for batch in read_spill(path):
                self.ledger.sink(batch.to_pylist())

    def write(self, target: Path, schema: pa.Schema, check: Any,
              take: Callable[[dict[str, Any]], None]) -> None:
        """Every step in the workers, and the units' rows into shards under `target` (after
        an exchange, the buckets' rows, a bucket's number as the shards' unit number);
        `take(result)` gets each item's shards and checks, in order."""
        self.prepare()
        self.absorb(self.map(self.phase(len(self.steps), "shards", True, target=str(target),
                                        schema=schema, check=check)), take)
        self.finish()

    def handoff(self) -> Iterator[pa.RecordBatch]:
        """Every step in the workers; their output, in unit order, for the driver to go on
        with (the steps that cannot run in the workers)."""
        self.prepare()
        if self.start < len(self.steps) or self.source is None or self.gathering:
            self.spill(len(self.steps))
        self.finish()
        for item in self.items:
            yield from read_spill(Path(self.source) / f"{item.n:09d}.arrow")
