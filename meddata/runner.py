"""Run steps from input versions to a published version: the one loop every command that
writes a version shares (build, dedup, decontam).

Batches flow from the inputs through the steps into the store's publisher; rejects go to
the version's rejects.parquet as steps drop rows; each stage's row conservation and each
step's report come from the ledger and land in the manifest. Spill files of two-pass steps
live in a temporary folder under `<store>/.tmp/`, removed when the run ends.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from meddata import steps as steps_mod
from meddata.progress import bar
from meddata.store import Store, Version


def read_versions(versions: list[Version], columns: list[str] | None = None,
                  batch_rows: int = steps_mod.BATCH_ROWS, tag: Callable | None = None
                  ) -> Callable[[bool], Iterator[pa.RecordBatch]]:
    """A reader over versions' shards, in order (verified once, here). `tag(i, batch)` may
    add columns to the batches of the i-th version."""
    for v in versions:
        v.verify("full")

    def read(replay: bool) -> Iterator[pa.RecordBatch]:
        for i, v in enumerate(versions):
            for batch in v.iter_batches(columns=columns, batch_size=batch_rows, verify="none"):
                yield tag(i, batch) if tag else batch
    return read


def with_progress(read: Callable[[bool], Iterator[pa.RecordBatch]], desc: str, total: int,
                  enabled: bool) -> Callable[[bool], Iterator[pa.RecordBatch]]:
    """The reader, counting rows on a progress bar: one bar per pass over the inputs."""
    passes = [0]

    def counted(replay: bool) -> Iterator[pa.RecordBatch]:
        passes[0] += 1
        label = desc if passes[0] == 1 else f"{desc} (pass {passes[0]})"
        with bar(label, total=total, unit=" rows", enabled=enabled) as b:
            for batch in read(replay):
                b.update(batch.num_rows)
                yield batch
    return counted


def publish(store: Store, kind: str, name: str, schema: pa.Schema,
            read: Callable[[bool], Iterator[pa.RecordBatch]], steps: list[steps_mod.Step],
            manifest: dict[str, Any], check: Callable[[pa.RecordBatch], None] | None = None,
            finish: Callable[[dict[str, Any]], None] | None = None,
            report: bool = False,
            attach: Callable[[Any], None] | None = None) -> Version:
    """Run `steps` over `read`, write the output to `kind/name`, and commit. `check` sees
    every output batch before it is written; `finish(extra)` runs before the commit and
    may add to the manifest or raise to publish nothing; `attach(publisher)` then adds
    files to the version (a retrieval index's); `report` writes the version's report.html
    (meddata/report.py)."""
    with store.publisher(kind, name, schema, **manifest) as pub:
        if report:
            from meddata import report as report_mod

            pub.attach_report(lambda version: report_mod.render(version, store, verify="none"))
        ledger = steps_mod.Ledger(pub.reject)
        spill = store.root / ".tmp"
        spill.mkdir(parents=True, exist_ok=True)
        spill_dir = tempfile.mkdtemp(prefix="spill-", dir=spill)
        try:
            for batch in steps_mod.run(read, steps, ledger, Path(spill_dir)):
                if check is not None:
                    check(batch)
                pub.write(batch)
        finally:
            shutil.rmtree(spill_dir, ignore_errors=True)
        for step in steps:
            report = step.report()
            if report and step.stats_key:
                pub.extra.setdefault("stats", {})[step.stats_key] = report
            elif report:
                pub.extra[step.report_key or step.name] = report
        for record in ledger.stages():
            record = dict(record)
            pub.add_stage(record.pop("stage"), record.pop("rows_in"), record.pop("rows_out"),
                          record.pop("dropped"), **record)
        if finish is not None:
            finish(pub.extra)
        if attach is not None:
            attach(pub)
    # what this run found: the same as the manifest's, unless the content existed already
    # (then the version, and its manifest, are the earlier run's)
    pub.version.this_run = {"stages": pub.stages, **pub.extra}
    return pub.version
