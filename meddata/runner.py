"""Run steps from input versions to a published version: the one loop every command that
writes a version shares (build, dedup, decontam).

Batches flow from the inputs through the steps into the store's publisher; rejects go to
the version's rejects.parquet as steps drop rows; each stage's row conservation and each
step's report come from the ledger and land in the manifest. Spill files of two-pass steps
live in a temporary folder under `<store>/.tmp/`, removed when the run ends. The steps run
on an `Engine`: this process (meddata.steps.run) or Ray Data (meddata.ray_engine.run); the
publisher, and so the version, is the same.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from meddata import steps as steps_mod
from meddata.progress import bar
from meddata.store import Store, Version


class VersionReader:
    """A reader over versions' shards, in order (verified once, when made): called with
    `replay`, it yields their batches; `tag(i, batch)` may add columns to the batches of
    the i-th version. The Ray engine reads the same shards with Ray Data."""

    def __init__(self, versions: list[Version], columns: list[str] | None = None,
                 batch_rows: int = steps_mod.BATCH_ROWS, tag: Callable | None = None):
        for v in versions:
            v.verify("full")
        self.versions, self.columns, self.batch_rows, self.tag = versions, columns, \
            batch_rows, tag

    def __call__(self, replay: bool) -> Iterator[pa.RecordBatch]:
        for i, v in enumerate(self.versions):
            for batch in v.iter_batches(columns=self.columns, batch_size=self.batch_rows,
                                        verify="none"):
                yield self.tag(i, batch) if self.tag else batch


def read_versions(versions: list[Version], columns: list[str] | None = None,
                  batch_rows: int = steps_mod.BATCH_ROWS, tag: Callable | None = None
                  ) -> VersionReader:
    """The reader of `versions` (see VersionReader)."""
    return VersionReader(versions, columns, batch_rows, tag)


class ProgressReader:
    """A reader counting its rows on a progress bar: one bar per pass over the inputs (the
    Ray engine draws the bar itself, from the rows its tasks have read)."""

    def __init__(self, reader: Callable[[bool], Iterator[pa.RecordBatch]], desc: str,
                 total: int, enabled: bool):
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


def with_progress(reader: Callable[[bool], Iterator[pa.RecordBatch]], desc: str, total: int,
                  enabled: bool) -> ProgressReader:
    """`reader`, counting rows on a progress bar labelled `desc` (of `total` rows)."""
    return ProgressReader(reader, desc, total, enabled)


@dataclass(frozen=True)
class Engine:
    """Where the steps run: `local` (this process) or `ray` (Ray Data; a cluster at
    `address`, or a local Ray with `cpus` CPUs)."""

    name: str = "local"
    address: str | None = None
    cpus: int | None = None

    NAMES = ("local", "ray")

    @classmethod
    def choose(cls, name: str | None = None, address: str | None = None,
               recipe_engine: str | None = None, cpus: int | None = None) -> Engine:
        """The engine named on the command line, else the recipe's, else MEDDATA_ENGINE,
        else local. Ray joins `address`, else MEDDATA_RAY_ADDRESS, else starts locally; an
        address given with another engine is a mistake."""
        chosen = name or recipe_engine or os.environ.get("MEDDATA_ENGINE") or "local"
        if chosen not in cls.NAMES:
            raise ValueError(f"unknown engine {chosen!r}; engines: {', '.join(cls.NAMES)}")
        if address and chosen != "ray":
            raise ValueError("--ray-address needs --engine ray")
        if chosen == "ray":
            address = address or os.environ.get("MEDDATA_RAY_ADDRESS") or None
        return cls(chosen, address, cpus)


def publish(store: Store, kind: str, name: str, schema: pa.Schema,
            read: Callable[[bool], Iterator[pa.RecordBatch]], steps: list[steps_mod.Step],
            manifest: dict[str, Any], check: Callable[[pa.RecordBatch], None] | None = None,
            finish: Callable[[dict[str, Any]], None] | None = None,
            report: bool = False,
            attach: Callable[[Any], None] | None = None, engine: Engine = Engine()) -> Version:
    """Run `steps` over `read`, write the output to `kind/name`, and commit. `check` sees
    every output batch before it is written; `finish(extra)` runs before the commit and
    may add to the manifest or raise to publish nothing; `attach(publisher)` then adds
    files to the version (a retrieval index's); `report` writes the version's report.html
    (meddata/report.py). `engine` says where the steps run; the version is the same.
    The version records the union of its data parents' licences (meddata/licenses.py)."""
    if "licenses" not in manifest and manifest.get("parents"):
        from meddata import licenses

        manifest = {**manifest, "licenses": licenses.inherit(store, manifest["parents"])}
    with session(engine):
        return _publish(store, kind, name, schema, read, steps, manifest, check, finish,
                        report, attach, engine)


@contextlib.contextmanager
def session(engine: Engine) -> Iterator[None]:
    """What `engine` needs around a command: Ray, started (or joined) once for everything
    inside; nothing for the local engine."""
    if engine.name != "ray":
        yield
        return
    from meddata import ray_engine

    with ray_engine.session(engine.address, engine.cpus):
        yield


def _publish(store, kind, name, schema, read, steps, manifest, check, finish, report, attach,
             engine) -> Version:
    run = steps_mod.run
    if engine.name == "ray":
        from meddata import ray_engine

        run = ray_engine.run
    with store.publisher(kind, name, schema, **manifest) as pub:
        if report:
            from meddata import report as report_mod

            pub.attach_report(lambda version: report_mod.render(version, store, verify="none"))
        pub.extra["engine"] = engine.name
        ledger = steps_mod.Ledger(pub.reject)
        spill = store.root / ".tmp"
        spill.mkdir(parents=True, exist_ok=True)
        spill_dir = tempfile.mkdtemp(prefix="spill-", dir=spill)
        try:
            for batch in run(read, steps, ledger, Path(spill_dir)):
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
