"""The local engine: every step in this process (`--engine local`, the default): the read
units one after another (meddata/engines/units.py), or, for a run with a step that cannot
run in the workers, batch after batch through the chained steps (an exchange step's output
put in order by `units.in_position_order`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from meddata.engines.base import Engine
from meddata.steps.base import Books, Ledger, Source, Step


class LocalEngine(Engine):
    name = "local"

    def run_steps(self, read: Callable[[bool], Iterator[pa.RecordBatch]], steps: list[Step],
                  ledger: Ledger, spill_dir: Path, replayable: bool = True
                  ) -> Iterator[pa.RecordBatch]:
        """Chain `steps` after `read(replay)` (which yields the input batches; `replay` is
        True when it is read again; `replayable` says whether reading again is cheap) and
        return the last step's batches."""
        return chain(read, steps, ledger, spill_dir, replayable)

    def map_units(self, phase, units: list) -> Iterator[dict[str, Any]]:
        from meddata.engines.units import run_unit

        for unit in units:
            yield run_unit(phase, unit, self.unbox)

    def convert_files(self, convert_span, conv: Any, files: list[Path]) -> Iterator[tuple]:
        """The files' spans one after another, in this process (the counting pass too)."""
        from meddata import ranges

        split = ranges.FileRanges(conv, files)
        spans = split.spans(ranges.count_chunk(chunk) for chunk in split.chunks)
        return ranges.stitch(spans, lambda span: convert_span(conv, span))

    def convert_stream(self, convert_records, conv: Any, records) -> Iterator[tuple]:
        return convert_records(conv, records)


def chain(read: Callable[[bool], Iterator[pa.RecordBatch]], steps: list[Step], ledger: Ledger,
          spill_dir: Path, replayable: bool = True) -> Iterator[pa.RecordBatch]:
    """The steps chained in this process (also the part of a Ray run after its last
    parallel step)."""
    make = read
    for step in steps:
        make = _stage(step, make, replayable, ledger.open(step.name), spill_dir)
        replayable = replayable and step.replayable
    return make(False)


def _stage(step: Step, upstream, replayable: bool, books: Books, spill_dir: Path):
    def make(replay: bool) -> Iterator[pa.RecordBatch]:
        own = Books(step.name) if replay else books  # a replay's counts are not the stage's
        source = Source(upstream, replayable, spill_dir, own, step.passes, replay)
        out = _counted(step.run(source, own), own)
        if step.exchange:  # its rows in the order of their positions
            from meddata.engines.units import in_position_order

            return in_position_order(step, out, spill_dir)
        return out
    return make


def _counted(it: Iterator[pa.RecordBatch], books: Books) -> Iterator[pa.RecordBatch]:
    with contextlib.closing(it) if hasattr(it, "close") else contextlib.nullcontext():
        for batch in it:
            if books.count_out:
                books.rows_out += batch.num_rows
            yield batch


def run_rows(steps: list[Step], rows: list[dict[str, Any]], schema: pa.Schema,
             spill_dir: Path) -> tuple[list[dict[str, Any]], Ledger]:
    """`steps` over rows in memory (tests, notebooks): (the output rows, the ledger, with
    the dropped rows in `ledger.rejects`)."""
    rejects: list[dict[str, Any]] = []
    ledger = Ledger(rejects.extend)
    ledger.rejects = rejects
    batches = pa.Table.from_pylist(rows, schema=schema).to_batches()
    out = [r for b in chain(lambda replay: iter(batches), steps, ledger, spill_dir)
           for r in b.to_pylist()]
    return out, ledger


def run_list(step: Step, rows: list[dict[str, Any]], batch_rows: int = 8192
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """One canonical step (dedup, decontam) over rows in memory: (kept rows, every dropped
    record with its reason and details, the step's summary)."""
    import json
    import tempfile

    from meddata.schema import CANONICAL

    batches = pa.Table.from_pylist(rows, schema=CANONICAL).to_batches(max_chunksize=batch_rows)
    dropped: list[dict[str, Any]] = []

    def sink(rejects: list[dict[str, Any]]) -> None:
        dropped.extend({"id": json.loads(r["raw"])["id"], "reason": r["reason"],
                        **json.loads(r["detail"])} for r in rejects)

    with tempfile.TemporaryDirectory() as tmp:
        out = list(chain(lambda replay: iter(batches), [step], Ledger(sink), Path(tmp)))
    kept_ids = {r for b in out for r in b.column("id").to_pylist()}
    order = {r["id"]: i for i, r in enumerate(rows)}
    dropped.sort(key=lambda d: order[d["id"]])
    return [r for r in rows if r["id"] in kept_ids], dropped, step.report()["summary"]
