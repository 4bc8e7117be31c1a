"""Run steps from input versions to a published version: what build, dedup, decontam,
curate and index build share (convert publishes raw files with meddata.convert).

Batches flow from the inputs through the steps, on the command's engine, into the version's
shards: when every step runs in the workers (`parallel`), each worker writes the shards of
the read units it ran (meddata/engines/units.py) and the driver only plans and commits;
otherwise the driver's publisher writes the last step's batches. Rejects go to the
version's rejects.parquet; each stage's row conservation and each step's report come from
the ledger and land in the manifest.
Spill files of two-pass steps live in a temporary folder under `<store>/.tmp/`, removed
when the run ends. The engine (meddata/engines/) decides where the steps run; the
publisher, and so the version, is the same.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from meddata.engines.base import Engine, ProgressReader, VersionReader
from meddata.engines.units import all_parallel
from meddata.steps.base import BATCH_ROWS, Ledger, Step
from meddata.store import Store, Version


def read_versions(versions: list[Version], columns: list[str] | None = None,
                  batch_rows: int = BATCH_ROWS, tag: Callable | None = None
                  ) -> VersionReader:
    """The reader of `versions` (see meddata.engines.base.VersionReader)."""
    return VersionReader(versions, columns, batch_rows, tag)


def with_progress(reader: VersionReader, desc: str, total: int,
                  enabled: bool) -> ProgressReader:
    """`reader`, counting rows on a progress bar labelled `desc` (of `total` rows)."""
    return ProgressReader(reader, desc, total, enabled)


def publish(store: Store, kind: str, name: str, schema: pa.Schema,
            read: Callable[[bool], Iterator[pa.RecordBatch]], steps: list[Step],
            manifest: dict[str, Any], engine: Engine,
            check: Any = None,
            finish: Callable[[dict[str, Any]], None] | None = None,
            report: bool = False,
            attach: Callable[[Any], None] | None = None) -> Version:
    """Run `steps` over `read`, write the output to `kind/name`, and commit. `check` (a
    validation Checker) sees every output batch before it is written (when every step runs
    in the workers, a copy of it in each worker, absorbed back in input order);
    `finish(extra)` runs before the commit and
    may add to the manifest or raise to publish nothing; `attach(publisher)` then adds
    files to the version (a retrieval index's); `report` writes the version's report.html
    (meddata/report.py). `engine` says where the steps run; the version is the same.
    The version records the union of its data parents' licences (meddata/licenses.py)."""
    if "licenses" not in manifest and manifest.get("parents"):
        from meddata import licenses

        manifest = {**manifest, "licenses": licenses.inherit(store, manifest["parents"])}
    with engine.session():
        return _publish(store, kind, name, schema, read, steps, manifest, check, finish,
                        report, attach, engine)


def _publish(store, kind, name, schema, read, steps, manifest, check, finish, report, attach,
             engine) -> Version:
    with store.publisher(kind, name, schema, **manifest) as pub:
        if report:
            from meddata import report as report_mod

            pub.attach_report(lambda version: report_mod.render(version, store, verify="none"))
        pub.extra["engine"] = engine.describe()
        # a de-identifying step scrubs what every step writes about rows (the rejects, the
        # report examples), so no step before it leaks an original value into the version
        scrubbers = [step for step in steps if hasattr(step, "scrub")]

        def scrub(value):
            for scrubber in scrubbers:
                value = scrubber.scrub(value)
            return value

        ledger = Ledger((lambda rows: pub.reject([scrub(r) for r in rows])) if scrubbers
                        else pub.reject)
        spill = store.root / ".tmp"
        spill.mkdir(parents=True, exist_ok=True)
        spill_dir = tempfile.mkdtemp(prefix="spill-", dir=spill)
        try:
            # every step in the workers over read units of store versions: the workers
            # write the shards (meddata/engines/units.py); else the driver writes them
            if all_parallel(steps) and hasattr(getattr(read, "reader", read), "versions"):
                engine.write_steps(read, steps, ledger, Path(spill_dir), pub, check)
            else:
                for batch in engine.run_steps(read, steps, ledger, Path(spill_dir)):
                    if check is not None:
                        check.feed(batch)
                    pub.write(batch)
        finally:
            shutil.rmtree(spill_dir, ignore_errors=True)
        for step in steps:
            found = step.report()
            if scrubbers and step not in scrubbers:
                found = scrub(found)
            if found and step.stats_key:
                pub.extra.setdefault("stats", {})[step.stats_key] = found
            elif found:
                pub.extra[step.report_key or step.name] = found
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
