"""The Ray engine: the same steps as the local engine, on Ray Data, from a laptop to a
cluster (`--engine ray`, `--ray-address`).

How a run maps onto Ray Data:

- A run is tasks over read units (meddata/engines/units.py, shared with the local engine):
  `ray.data.from_items` gives one block per unit (or per bucket of an exchange), and one
  `map_batches` task runs `units.run_unit` on it: the unit's row groups read by the task
  itself, every step (each built per worker by its `setup`), and the sink of the phase
  (a scan for a two-phase step's plan, a spill, an exchange, or the version's shards,
  which the task writes and checks). It returns one row: its pickled result (books,
  report state, compact scan rows, the shards it wrote). Ray Data keeps the blocks in
  order (`preserve_order`), so the driver merges the results in unit order.
- A run with a step that is not `parallel` (a user's own) runs the steps before it as
  unit tasks, spilled per unit, and the rest on the driver (`run_steps`).
- `convert` runs a task per span of its input files (meddata/ranges.py), its report
  state kept by a `_Tally` actor that survives its worker's death.
- The store must be on a filesystem every node sees, at the same path.

Ray is imported only here, and only when a command asks for it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from meddata.engines.base import Engine
from meddata.engines.local import chain as chain_locally
from meddata.steps.base import BATCH_ROWS, Ledger, Step

# one Ray CPU, one thread: tokenizers and polars would otherwise each start a thread per
# core in every task, and a worker's CPU count would mean nothing
WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1",
              "FASTOKENS_BPE_THREADS": "1", "POLARS_MAX_THREADS": "1"}
# Ray Data's map tasks already run again when their worker dies or their input is lost
# (max_retries -1, retry_exceptions only RaySystemError; lost blocks are rebuilt from their
# lineage); an exception the task's own code raises is deterministic and fails the run at
# once. Passing these again per map_batches call would be Ray's deprecated ray_remote_args
# (and a ray_remote_args_fn stops Ray from fusing the steps into one task per block).
# The tally actor restarts when its worker dies and reloads its books from its folder;
# calls to it are retried meanwhile.
TALLY_OPTIONS = {"num_cpus": 0, "max_restarts": -1, "max_task_retries": -1}


class RayNotInstalled(RuntimeError):
    """`--engine ray` without the ray extra."""


def _ray():
    try:
        import ray
    except ImportError as e:
        raise RayNotInstalled("--engine ray needs Ray Data: pip install -e \".[ray]\" (or pip "
                              "install \"meddata[ray]\")") from e
    return ray


@contextlib.contextmanager
def _session(address: str | None = None, cpus: int | None = None) -> Iterator[None]:
    """Ray for one command: join the cluster at `address`, or start a local Ray with `cpus`
    CPUs (default: all) and shut it down after. An already initialized Ray (a notebook, a
    test) is used as it is."""
    ray = _ray()
    started = False
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                                   "log_to_driver": False,  # a task's error is raised here
                                   "runtime_env": {"env_vars": WORKER_ENV}}
        # SIGTERM (and SIGINT) end the command through its `finally`, which stops the Ray it
        # started, also when they arrive while Ray is starting
        stop = _stop_on_signals()
        try:
            started = True
            if address:
                ray.init(address=address, **options)
            else:
                ray.init(num_cpus=cpus, **options)
        except BaseException:
            with contextlib.suppress(Exception):
                ray.shutdown()
            stop()
            raise
    else:
        stop = lambda: None  # noqa: E731 - someone else's Ray: their signals, their shutdown
    context = ray.data.DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.enable_progress_bars,
             context.raise_original_map_exception, context.op_resource_reservation_enabled)
    log = logging.getLogger("ray.data")
    level = log.level
    context.execution_options.preserve_order = True  # the same rows in the same order
    context.enable_progress_bars = False  # the command draws its own
    context.raise_original_map_exception = True  # a failed step's own error, not a wrapper
    # a run is one fused map operator: Ray Data's per-operator reservation kept it to one
    # task at a time on a 2-CPU machine (measured: 60 tasks of 0.1 s, none overlapping)
    context.op_resource_reservation_enabled = False
    # a failed task is raised to the command, which prints it in one line: Ray Data's own
    # log of it (with the worker's stack) would say it again
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        (context.execution_options.preserve_order, context.enable_progress_bars,
         context.raise_original_map_exception, context.op_resource_reservation_enabled) = saved
        log.setLevel(level)
        try:
            if started:
                ray.shutdown()
        finally:
            stop()


def _stop_on_signals():
    """Make SIGTERM raise SystemExit (and SIGINT KeyboardInterrupt) in the main thread while
    a command's own Ray runs; returns the function that puts the old handlers back."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def end(signum, frame):
        raise SystemExit(128 + signum)

    old = {signal.SIGTERM: signal.signal(signal.SIGTERM, end),
           signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}

    def restore() -> None:
        for sig, handler in old.items():
            with contextlib.suppress(TypeError, ValueError):
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    return restore


def first_error(error: BaseException) -> BaseException:
    """The exception a failed Ray task raised, unwrapped from Ray's own."""
    for _ in range(10):
        cause = getattr(error, "cause", None)
        if isinstance(cause, BaseException) and cause is not error:
            error = cause
        elif type(error).__module__.startswith("ray.") and error.__cause__ is not None:
            error = error.__cause__
        else:
            break
    return error


@contextlib.contextmanager
def _task_errors() -> Iterator[None]:
    """A failed task fails the command with the error the task raised (not Ray's wrapper
    with the worker's traceback)."""
    ray = _ray()
    lost = (ray.exceptions.RaySystemError, ray.exceptions.ObjectLostError,
            ray.exceptions.WorkerCrashedError, ray.exceptions.RayActorError,
            ray.exceptions.NodeDiedError)
    try:
        yield
    except Exception as e:
        error = first_error(e)
        if isinstance(error, lost):
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise RuntimeError(f"Ray lost a worker or its data and could not recover it "
                               f"after retrying ({type(error).__name__}: {first[:200]}); "
                               "nothing was published: run the command again") from None
        if error is e:
            raise
        raise error from None


class RayEngine(Engine):
    """Ray Data: a cluster at `address`, or a local Ray with `cpus` CPUs (default: all)."""

    name = "ray"

    def __init__(self, address: str | None = None, cpus: int | None = None):
        self.address, self.cpus = address, cpus
        self._depth = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"address": self.address, "cpus": self.cpus, "_depth": 0}

    @contextlib.contextmanager
    def session(self) -> Iterator[RayEngine]:
        """Ray for one command, started (or joined) by the outermost session only."""
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        with _session(self.address, self.cpus):
            self._depth = 1
            try:
                yield self
            finally:
                self._depth = 0

    def ship(self, step: Step) -> list:
        return [_ray().put(step)]  # (in a list: Ray would resolve a bare reference itself)

    def unbox(self, box: list) -> Step:
        return _unbox(box)

    def map_units(self, phase, units: list) -> Iterator[dict[str, Any]]:
        return _map_units(phase, units)

    def run_steps(self, read, steps: list[Step], ledger: Ledger,
                  spill_dir: Path) -> Iterator[pa.RecordBatch]:
        """The leading parallel steps in Ray tasks (their output spilled per unit, read back
        in order); the rest, from the first step that cannot run in the workers, here."""
        from meddata.engines.units import Run

        ahead = 0
        while ahead < len(steps) and steps[ahead].parallel:
            ahead += 1
        if not ahead:
            return chain_locally(read, steps, ledger, spill_dir)
        run = Run(self, read, steps[:ahead], ledger, spill_dir)
        return chain_locally(lambda replay: run.handoff(), steps[ahead:], ledger, spill_dir,
                             replayable=False)

    def convert_files(self, convert_span, conv, files: list[Path]) -> Iterator[tuple]:
        return _convert_files(convert_span, conv, files)


# ---- what runs in the tasks ---------------------------------------------------------------------
_UNBOXED: dict[str, Any] = {}  # object id -> what it holds (a step, a converter), per process


def _unbox(box: list):
    ray = _ray()
    key = box[0].hex()
    if key not in _UNBOXED:
        _UNBOXED[key] = ray.get(box[0])
    return _UNBOXED[key]


class _Tally:
    """The report state of `convert`'s span tasks, by span number, each also written to a
    file of its own under `folder`: an actor that Ray restarts after its worker died
    reloads what it had, and a span task run again replaces its state."""

    def __init__(self, folder: str):
        import pickle

        self.folder = folder
        self.states: dict[int, Any] = {}
        Path(folder).mkdir(parents=True, exist_ok=True)  # (the actor may run on another node)
        for path in sorted(Path(folder).glob("state-*.pkl")):  # restarted: what it had
            self.states[int(path.stem.split("-")[1])] = pickle.loads(path.read_bytes())

    def add(self, span: int, state: Any) -> None:
        import os
        import pickle

        path = Path(self.folder) / f"state-{span:09d}.pkl"  # (kept for a restart)
        path.with_suffix(".tmp").write_bytes(pickle.dumps(state))
        os.replace(path.with_suffix(".tmp"), path)
        self.states[span] = state

    def result(self) -> dict[int, Any]:
        return self.states


# ---- a run over read units (meddata/engines/units.py) --------------------------------------------
def _unit_task(table: pa.Table, phase, units: list) -> pa.Table:
    """A Ray Data task: the read unit named by the block's one row through `phase`; its
    result (books, compact scan rows, shards written) pickled into one row."""
    import pickle

    from meddata.engines.units import run_unit

    (n,) = table.column("unit").to_pylist()
    result = run_unit(phase, units[n], _unbox)
    return pa.table({"unit": [n], "result": pa.array([pickle.dumps(result)], pa.large_binary())})


def _map_units(phase, units: list) -> Iterator[dict[str, Any]]:
    """One Ray Data task per read unit (a block of one row each, so Ray schedules units,
    not bundles of them), the results in unit order (`preserve_order`)."""
    import pickle

    ray = _ray()
    ds = ray.data.from_items([{"unit": u.n} for u in units],
                             override_num_blocks=max(len(units), 1))
    ds = ds.map_batches(_unit_task, fn_args=(phase, units), batch_size=None,
                        batch_format="pyarrow")
    with _task_errors():
        for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            for blob in table.column("result").to_pylist():
                yield pickle.loads(blob)


# ---- convert: one task per span of the input files ------------------------------------------
def _convert_files(convert_span, conv, files: list[Path]) -> Iterator[tuple]:
    """The parts of converting `files`, in file order, each span (a whole file, or a span
    of a large one: meddata.ranges) converted by its own Ray task with
    `convert_span(conv, span)`, after a first pass of tasks that count the large files'
    chunks. The converter has seen every file (`prepare`) here first; what its copies in
    the tasks gather for its report (`take_state`) is merged back into it in span order.
    A span that the span before it ran over is read again here (`ranges.stitch`), with a
    copy of the converter of its own. Call inside a session."""
    import shutil
    import tempfile

    from meddata import ranges

    ray = _ray()
    split = ranges.FileRanges(conv, files)
    with _task_errors():
        spans = split.spans(_count_chunks(ray, split.chunks))
    folder = tempfile.mkdtemp(prefix="meddata-convert-tally-")
    try:
        tally = ray.remote(**TALLY_OPTIONS)(_Tally).remote(folder)
        conv_ref = ray.put(conv)
        ds = ray.data.from_items([{"number": s.number} for s in spans],
                                 override_num_blocks=max(len(spans), 1))
        ds = ds.map_batches(_convert_task, fn_args=(convert_span, [conv_ref],
                                                    [ray.put(spans)], tally),
                            batch_size=1, batch_format="pyarrow")
        ahead = (part for table in ds.iter_batches(batch_format="pyarrow", batch_size=None)
                 for part in _parts(table))
        here: dict[int, Any] = {}  # span number -> the state of a span read again here
        dropped: set[int] = set()
        with _task_errors():
            yield from ranges.stitch(spans, lambda span: _convert_here(
                convert_span, ray.get(conv_ref), span, here), ahead, dropped)
            states = ray.get(tally.result.remote())
        states = {span: state for span, state in states.items() if span not in dropped}
        for _, state in sorted({**states, **here}.items()):
            if state is not None:
                conv.merge_state(state)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _count_chunks(ray, chunks: list) -> list:
    """The counts of the large files' chunks (`ranges.count_chunk`), a Ray task each, in
    the chunks' order."""
    if not chunks:
        return []
    from meddata.ranges import count_chunk

    count = ray.remote(num_cpus=1)(count_chunk)
    return ray.get([count.remote(chunk) for chunk in chunks])


def _convert_here(convert_span, conv, span, states: dict[int, Any]) -> Iterator[tuple]:
    """A span read on the driver (with its own copy of the converter, whose state is kept
    for the merge in span order)."""
    yield from convert_span(conv, span)
    states[span.number] = conv.take_state()


def _part_schema() -> pa.Schema:
    from meddata.schema import CANONICAL

    return pa.schema([f.with_nullable(True) for f in CANONICAL] + [
        ("_file", pa.string()), ("_position", pa.int64()), ("_raw", pa.string()),
        ("_reason", pa.string()), ("_detail", pa.string()),
        ("_end", pa.int64()), ("_reached", pa.int64())])


def _convert_task(table: pa.Table, convert_span, box: list, spans_box: list,
                  tally) -> Iterator[pa.Table]:
    """A task: convert one span, yielding tables of rows and rejects as they fill, the
    span's end last; what the converter gathered for its report goes to the tally, keyed
    by the span."""
    import dataclasses

    ray = _ray()
    conv = _unbox(box)
    (number,) = table.column("number").to_pylist()
    span = dataclasses.replace(_unbox(spans_box)[number])
    pending: list[tuple] = []
    held = 0
    parts = convert_span(conv, span)
    try:
        for part in parts:
            pending.append(part)
            held += part[1].height if part[0] == "rows" else 1
            if held >= BATCH_ROWS:
                yield _part_table(pending)
                pending, held = [], 0
        if pending:
            yield _part_table(pending)
    finally:
        parts.close()
    ray.get(tally.add.remote(number, conv.take_state()))


def _part_table(parts: list[tuple]) -> pa.Table:
    """Parts as one table: canonical rows with their origin, rejects (no row), and the
    span's end (no row, no reject)."""
    import polars as pl

    from meddata.ranges import END
    from meddata.schema import CANONICAL

    schema = _part_schema()
    none = {f.name: pa.nulls(1, f.type) for f in schema}
    tables = []
    for part in parts:
        if part[0] == "rows":
            _, rows, origin = part
            t = rows.select(CANONICAL.names).to_arrow().cast(CANONICAL)
            t = t.append_column("_file", origin["file"].to_arrow()) \
                .append_column("_position", origin["position"].cast(pl.Int64).to_arrow()) \
                .append_column("_raw", origin["raw"].to_arrow().cast(pa.string()))
            for name in ("_reason", "_detail", "_end", "_reached"):
                t = t.append_column(name, pa.nulls(t.num_rows, schema.field(name).type))
            tables.append(t.cast(schema))
        elif part[0] == END:
            _, number, reached = part
            tables.append(pa.table(none | {"_end": [number], "_reached": [reached]},
                                   schema=schema))
        else:
            _, file, position, raw, reason, detail = part
            tables.append(pa.table(none | {
                "_file": [file], "_position": [position], "_raw": [raw], "_reason": [reason],
                "_detail": [detail]}, schema=schema))
    return pa.concat_tables(tables)


def _parts(table: pa.Table) -> Iterator[tuple]:
    """A task's table back into parts: its rejects, then its rows, then the span's end."""
    import polars as pl

    from meddata.ranges import END
    from meddata.schema import CANONICAL

    rejected = pc.is_valid(table.column("_reason"))
    ended = pc.is_valid(table.column("_end"))
    for r in table.filter(rejected).select(
            ["_file", "_position", "_raw", "_reason", "_detail"]).to_pylist():
        yield ("reject", r["_file"], r["_position"], r["_raw"], r["_reason"], r["_detail"])
    rows = table.filter(pc.invert(pc.or_(rejected, ended)))
    if rows.num_rows:
        origin = pl.from_arrow(rows.select(["_file", "_position", "_raw"])).rename(
            {"_file": "file", "_position": "position", "_raw": "raw"})
        yield ("rows", pl.from_arrow(rows.select(CANONICAL.names).cast(CANONICAL)), origin)
    for r in table.filter(ended).select(["_end", "_reached"]).to_pylist():
        yield (END, r["_end"], r["_reached"])
