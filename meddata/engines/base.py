"""What every engine implements, and the readers engines run steps over.

An engine runs a list of steps over read units and converts raw files; nothing outside
meddata/engines/ knows which engine runs. A command chooses one engine (meddata.engines.
choose: `--engine`, the recipe's `engine`, MEDDATA_ENGINE, else local), opens one
`with engine.session():` around everything it does, and hands the engine down.

- `map_units(phase, units)`: one task per read unit (meddata/engines/units.py), the
  results in unit order; with `ship`/`unbox`, how a step reaches a task. On these,
  `write_steps` runs a list of steps that all run in the workers (`parallel`), where each
  worker writes its units' shards, the same on every engine.
- `run_steps(read, steps, ledger, spill_dir)`: for a list with a step that cannot run in
  the workers: the last step's batches, in input order, with every stage's books in
  `ledger`, for the driver to write. `read` is a `VersionReader` (the input versions'
  shards, in order), optionally wrapped in a `ProgressReader`.
- `convert_files(convert_span, conv, files)`: the parts `convert_span(conv, span)` yields
  for each span of the files (meddata.ranges: a large JSON Lines, CSV or Parquet file is
  split, after a counting pass over its chunks), put in order by `meddata.ranges.stitch`
  (see meddata.convert), with what the converter gathered for its report merged back into
  `conv` in span order; `convert_stream(convert_records, conv, records)` the same for a
  stream of records (a hub dataset), where the engine can.

A new engine (Spark, Daft) is one module here implementing these methods; see
docs/scale.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from meddata.progress import bar
from meddata.steps.base import BATCH_ROWS, Ledger, Step


class Engine:
    """Where the steps run. Subclasses set `name` and implement the methods below."""

    name = ""

    @contextlib.contextmanager
    def session(self) -> Iterator[Engine]:
        """What the engine needs around one command (Ray, started or joined once, however
        deeply sessions nest); nothing for the local engine."""
        yield self

    def run_steps(self, read: Callable[[bool], Iterator[pa.RecordBatch]], steps: list[Step],
                  ledger: Ledger, spill_dir: Path) -> Iterator[pa.RecordBatch]:
        """The last step's batches, in input order, for the driver to write: a run with a
        step that cannot run in the workers (not `parallel`)."""
        raise NotImplementedError

    def write_steps(self, read: Callable[[bool], Iterator[pa.RecordBatch]],
                    steps: list[Step], ledger: Ledger, spill_dir: Path, publisher,
                    check=None) -> None:
        """Every step in the workers, over the read units of `read` (meddata/engines/
        units.py), each unit's rows written by its worker into `publisher`'s shards and
        checked there by a copy of `check` (a validation Checker, whose findings are
        absorbed in unit order); the driver plans and merges books."""
        from meddata.engines.units import Run

        def take(result: dict[str, Any]) -> None:
            publisher.add_written(result["written"])
            if check is not None and result["checked"] is not None:
                check.absorb(result["checked"], publisher.find_ids)

        Run(self, read, steps, ledger, spill_dir).write(publisher.data_dir, publisher.schema,
                                                        check, take)

    def ship(self, step: Step) -> Any:
        """`step` as the tasks get it (Ray: in its object store, once)."""
        return step

    def unbox(self, shipped: Any) -> Step:
        """The step a task got from `ship`."""
        return shipped

    def map_units(self, phase, units: list) -> Iterator[dict[str, Any]]:
        """`meddata.engines.units.run_unit(phase, unit, ...)` for every unit, wherever the
        engine runs tasks; the results in unit order."""
        raise NotImplementedError

    def convert_files(self, convert_span: Callable[[Any, Any], Iterator[tuple]], conv: Any,
                      files: list[Path]) -> Iterator[tuple]:
        raise NotImplementedError

    def convert_stream(self, convert_records: Callable[[Any, Iterator], Iterator[tuple]],
                       conv: Any, records: Iterator) -> Iterator[tuple]:
        """The parts of a stream of raw records that only this process can read (a hub
        dataset streamed from the network), in order."""
        raise NotImplementedError(f"the {self.name} engine converts files; a hub dataset "
                                  "is read by the local engine (--engine local)")

    def describe(self) -> str:
        """The engine's name as the manifest records it."""
        return self.name


class VersionReader:
    """A reader over versions' shards, in order (verified once, when made): called with
    `replay`, it yields their batches; `tag(i, batch)` may add columns to the batches of
    the i-th version. The Ray engine reads the same shards, row group by row group."""

    def __init__(self, versions: list, columns: list[str] | None = None,
                 batch_rows: int = BATCH_ROWS, tag: Callable | None = None):
        for v in versions:
            v.verify("full")
        self.versions, self.columns, self.batch_rows, self.tag = versions, columns, \
            batch_rows, tag

    def __call__(self, replay: bool) -> Iterator[pa.RecordBatch]:
        for i, v in enumerate(self.versions):
            for batch in v.iter_batches(columns=self.columns, batch_size=self.batch_rows,
                                        verify="none"):
                yield self.tag(i, batch) if self.tag else batch


class ProgressReader:
    """A reader counting its rows on a progress bar: one bar per pass over the inputs (the
    Ray engine draws the bar itself, from the rows its tasks have read)."""

    def __init__(self, reader: VersionReader, desc: str, total: int, enabled: bool):
        self.reader, self.desc, self.total, self.enabled = reader, desc, total, enabled
        self.passes = 0

    def bar(self):
        self.passes += 1
        label = self.desc if self.passes == 1 else f"{self.desc} (pass {self.passes})"
        return bar(label, total=self.total, unit=" rows", enabled=self.enabled)

    def __call__(self, replay: bool) -> Iterator[pa.RecordBatch]:
        with self.bar() as b:
            for batch in self.reader(replay):
                b.update(batch.num_rows)
                yield batch
