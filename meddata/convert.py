"""Run a converter over raw files (or a hub dataset) and publish `canonical/<name>`.

A converter turns one raw record into one canonical row or raises `Reject`. This module owns
everything around that: reading, ids, lineage hashes, required-field checks, batching into
Arrow, quarantining rejects with file, position, raw text and reason, row conservation, the
reject-rate limit, and publishing.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from meddata.engines.base import Engine
from meddata.engines.local import LocalEngine
from meddata.ranges import END
from meddata.readers import RawRecord, Span, is_empty, jsonl_record, list_files, read_file
from meddata.schema import CANONICAL, LANGS, TASKS
from meddata.steps.keys import SeenKeys
from meddata.store import Store, Version, sha256_file
from meddata.text import clean, detect_lang

ROWS_PER_PART = 5_000  # canonical rows gathered into one part (one Arrow batch)
SPLIT_WORDS = {"train", "dev", "validation", "valid", "val", "test"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class Reject(Exception):
    """Raised by a converter for a record it cannot turn into a valid row."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


class ConversionError(Exception):
    """A conversion that must stop: bad options, an undecidable file, too many rejects."""


class Converter:
    """Base class: subclasses set `source`, `default_subset` and implement `row`."""

    source: str = ""
    default_subset: str = "default"
    #: the published licence of the source's public release: an SPDX id (the Hugging Face
    #: Hub's lower-case spelling), `research-only`, or `unknown` where the release states
    #: none; `license_url` is where it is stated (meddata/licenses.py)
    license: str = "unknown"
    license_url: str | None = None
    #: options a converter accepts beyond subset and split: name -> help text
    options: dict[str, str] = {}
    #: the fields that make a record one of this source's: a record has every field of at
    #: least one group. A file whose sampled records mostly lack them while they have
    #: another source's is refused, naming that source (`check_looks_like`).
    signatures: tuple[tuple[str, ...], ...] = ()

    def __init__(self, subset: str | None = None, split: str | None = None, **options: Any):
        unknown = set(options) - set(self.options)
        if unknown:
            raise ConversionError(f"{self.source}: unknown option(s) {', '.join(sorted(unknown))}")
        self.subset, self.split, self.opts = subset, split, options

    # hooks ------------------------------------------------------------------------------
    def prepare(self, files: list[Path]) -> list[Path]:
        """Look at the files before conversion; return the files whose records are rows."""
        return files

    def infer_subset(self, file: str) -> str | None:
        return None

    def read(self, path: Path, span: Span | None = None) -> Iterator[RawRecord]:
        """The raw records of one file (meddata.readers by its suffix), or of one span of a
        large file (meddata.ranges; hand `span` to the reader). A converter whose source
        packs several rows into one record (a case with its question-answer pairs) yields
        one RawRecord per row here, so each row keeps its own raw text and position. A
        converter whose `read` takes no `span` has each file read whole, by one task."""
        return read_file(path, span)

    #: set by converters that implement `frame`; tests turn it off to compare both paths
    fast: bool = False

    def fast_accepts(self, data: bytes) -> bool:
        """Whether a chunk of JSON Lines (bytes) may take `frame` at all: a cheap check on
        the raw bytes for what parsing would hide (polars turns a list where text belongs
        into text)."""
        return True

    def fast_layout(self, df) -> bool:
        """Whether a parsed JSON Lines chunk (a polars DataFrame) suits `frame`."""
        return False

    def frame(self, df, file: str):
        """Vectorized `row` over a chunk that `fast_layout` accepted: a polars DataFrame with
        the canonical columns except id, source and raw_sha1, plus `source_id`, `_reason` and
        `_detail` (the reject reason and detail, null for a good row). It must give exactly
        what `row` gives; the tests compare the two on every sample."""
        raise NotImplementedError

    def take_state(self) -> Any:
        """What this copy gathered for its report while converting (then forgotten here):
        the Ray engine converts each file (or span of a large file) with a copy and merges
        this back (`merge_state`), in file order, then span order; None when it gathers
        nothing."""
        return None

    def merge_state(self, state: Any) -> None:
        """Add what another copy's `take_state` handed over."""

    def report(self) -> dict[str, Any]:
        """Facts about the conversion for the manifest (for example labels left unjoined)."""
        return {}

    def row(self, rec: RawRecord) -> dict[str, Any]:
        """One canonical row (a dict of canonical columns, plus `source_id`), or raise Reject."""
        raise NotImplementedError

    # shared -------------------------------------------------------------------------------
    def subset_for(self, file: str) -> str:
        if self.subset:
            return self.subset
        cache = self.__dict__.setdefault("_subsets", {})
        if file not in cache:
            cache[file] = self.infer_subset(file) or self.default_subset
        return cache[file]

    def split_for(self, rec: RawRecord) -> str:
        return self.split or rec.split or split_from_name(rec.file)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "subset": self.subset, "split": self.split, **self.opts}


@functools.lru_cache(maxsize=256)
def split_from_name(file: str) -> str:
    """A split word in the file name (train, dev, validation, valid, val, test), else train."""
    for word in re.split(r"[^a-z]+", Path(file).name.lower()):
        if word in SPLIT_WORDS:
            return word
    return "train"


def as_record(rec: RawRecord) -> dict[str, Any]:
    if not isinstance(rec.record, dict):
        raise Reject("not_an_object", f"expected a JSON object, got {type(rec.record).__name__}")
    return rec.record


def require(record: dict[str, Any], *names: str) -> str:
    """The first of `names` that holds non-empty text, else Reject(missing_field)."""
    for n in names:
        value = record.get(n)
        if value is not None and not isinstance(value, (str, int, float)):
            raise Reject("wrong_type", f"field {n!r} is {type(value).__name__}, expected text")
        text = clean(value)
        if text:
            return text
    raise Reject(f"missing_field:{names[0]}", f"no non-empty {' / '.join(names)}")


def _finish(row: dict[str, Any], conv: Converter, rec: RawRecord) -> dict[str, Any]:
    """Fill the canonical defaults, the id and the lineage hash; check required fields."""
    out = {name: row.get(name) for name in CANONICAL.names}
    out["source"] = conv.source
    out["subset"] = out["subset"] or conv.subset_for(rec.file)
    out["split"] = out["split"] or conv.split_for(rec)
    out["options"] = out["options"] or []
    out["turns"] = out["turns"] or []
    out["lang"] = out["lang"] or detect_lang(out["question"], out["context"], out["response"])
    meta = out["meta"] if isinstance(out["meta"], dict) else {}
    out["meta"] = json.dumps({k: v for k, v in meta.items() if v not in (None, "", [], {})},
                             ensure_ascii=False, sort_keys=True, default=str)
    out["raw_sha1"] = hashlib.sha1(rec.raw.encode("utf-8")).hexdigest()
    source_id = row.get("source_id") or out["raw_sha1"][:16]
    out["id"] = f"{conv.source}/{out['subset']}/{out['split']}/{source_id}"
    if out["task"] not in TASKS:
        raise Reject("bad_task", f"task {out['task']!r}")
    if out["lang"] not in LANGS:
        raise Reject("bad_lang", f"lang {out['lang']!r}")
    if out["task"] == "document":
        if not out["context"]:
            raise Reject("missing_field:text", "empty document")
        out["question"] = out["question"] or ""
    elif not out["question"]:
        raise Reject("missing_field:question", "empty question")
    if out["task"] in ("instruction", "reasoning", "open_qa", "dialogue") and not out["response"]:
        raise Reject("missing_field:response", "empty response")
    return out


LOOKS_LIKE_SAMPLE = 20


def _looks(record: Any, signatures) -> bool:
    return isinstance(record, dict) and any(all(f in record for f in group)
                                            for group in signatures)


def check_looks_like(conv: Converter, files: list[Path]) -> None:
    """Refuse, in one line, a file given to the wrong converter: when fewer than half of its
    first LOOKS_LIKE_SAMPLE records have this source's fields (`signatures`) and more than
    half have another source's, name that source."""
    import itertools

    from meddata.converters import REGISTRY, get

    if not conv.signatures:
        return
    others = {name: get(name).signatures for name in REGISTRY if name != conv.source}
    for f in files:
        sample = [rec.record for rec in itertools.islice(conv.read(f), LOOKS_LIKE_SAMPLE)
                  if not rec.error]
        if not sample or 2 * sum(_looks(r, conv.signatures) for r in sample) >= len(sample):
            continue
        fits = sorted(((sum(_looks(r, sigs) for r in sample), name)
                       for name, sigs in others.items() if sigs), reverse=True)
        fits = [(n, name) for n, name in fits if 2 * n > len(sample)]
        if not fits:
            continue
        n, name = fits[0]
        fields = " / ".join(", ".join(g) for g in conv.signatures)
        raise ConversionError(
            f"{conv.source}: {f} does not look like {conv.source} records ({n} of the first "
            f"{len(sample)} have {name}'s fields, {conv.source} needs {fields}); it looks "
            f"like {' or '.join(nm for _, nm in fits)}: meddata convert {name} {f}")


class ConversionResult:
    def __init__(self, version: Version, rows_in: int, rows_out: int, rejects: Counter):
        self.version, self.rows_in, self.rows_out, self.rejects = (
            version, rows_in, rows_out, rejects)


def hub_records(hub_id: str, config: str | None, split: str | None) -> Iterator[RawRecord]:
    """Records of a Hugging Face dataset, streamed (needs network)."""
    import datasets

    loaded = datasets.load_dataset(hub_id, config, split=split, streaming=True)
    splits = {split: loaded} if split else dict(loaded)
    for split_name, ds in splits.items():
        for i, row in enumerate(ds, 1):
            yield RawRecord(f"hf://{hub_id}" + (f"/{config}" if config else "") + f"/{split_name}",
                            i, json.dumps(row, ensure_ascii=False, default=str), row,
                            split=split_name)


class _Converting:
    """Turns raw records (`record`) and vectorized chunks (`frame`) into parts, in input
    order: `("rows", rows, origin)`, canonical rows (a polars frame, up to ROWS_PER_PART)
    with the file, position and raw text of each, and `("reject", file, position, raw,
    reason, detail)`. It runs wherever the records are read: in this process, or in an
    engine's worker (`convert_span`)."""

    def __init__(self, conv: Converter):
        self.conv = conv
        self.batch: list[dict[str, Any]] = []
        self.origin: list[tuple[str, int, str]] = []
        self._duckdb = None

    def record(self, rec: RawRecord) -> Iterator[tuple]:
        if rec.error:
            yield ("reject", rec.file, rec.position, rec.raw, "unparseable", rec.error)
            return
        try:
            row = _finish(self.conv.row(rec), self.conv, rec)
        except Reject as e:
            yield ("reject", rec.file, rec.position, rec.raw, e.reason, e.detail)
            return
        self.batch.append(row)
        self.origin.append((rec.file, rec.position, rec.raw))
        if len(self.batch) >= ROWS_PER_PART:
            yield from self.flush()

    def flush(self) -> Iterator[tuple]:
        import polars as pl

        if self.batch:
            rows = pl.from_arrow(pa.Table.from_pylist(self.batch, schema=CANONICAL))
            files, positions, raws = zip(*self.origin)
            self.batch, self.origin = [], []
            yield ("rows", rows, pl.DataFrame({"file": files, "position": positions,
                                               "raw": raws},
                                              schema={"file": pl.String, "position": pl.Int64,
                                                      "raw": pl.String}))

    def frame(self, chunk: _FastChunk) -> Iterator[tuple]:
        """A chunk converted by the converter's vectorized `frame` (see `_FastChunk`)."""
        import duckdb
        import polars as pl

        yield from self.flush()
        file, first_line, lines, out = str(chunk.path), chunk.first_line, chunk.lines, chunk.frame
        if self._duckdb is None:  # one connection for every chunk's sha1 (multithreaded)
            self._duckdb = duckdb.connect()
        self._duckdb.register("chunk", pl.DataFrame({"raw": lines}).to_arrow())
        sha = pl.from_arrow(
            self._duckdb.sql("SELECT sha1(raw) AS h FROM chunk").to_arrow_table())["h"]
        self._duckdb.unregister("chunk")
        n = len(lines)
        origin = pl.DataFrame({"file": pl.Series([file] * n, dtype=pl.String),
                               "position": pl.int_range(first_line, first_line + n, eager=True),
                               "raw": lines})
        out = out.with_columns(raw_sha1=sha, source=pl.lit(self.conv.source)).with_columns(
            id=pl.concat_str([pl.lit(f"{self.conv.source}/"), "subset", pl.lit("/"), "split",
                              pl.lit("/"), pl.coalesce("source_id", sha.str.slice(0, 16))]))
        bad = out["_reason"].is_not_null()
        if bad.any():  # (filtering copies the raw lines: only when something is rejected)
            for o, r in zip(origin.filter(bad).iter_rows(named=True),
                            out.filter(bad).select("_reason", "_detail").iter_rows()):
                yield ("reject", o["file"], o["position"], o["raw"], r[0], r[1] or "")
            out, origin = out.filter(~bad), origin.filter(~bad)
        yield ("rows", out.select(CANONICAL.names), origin)

    def items(self, items: Iterator) -> Iterator[tuple]:
        """The parts of a stream of RawRecords and fast chunks, flushed at its end."""
        for item in items:
            yield from (self.record(item) if isinstance(item, RawRecord) else self.frame(item))
        yield from self.flush()

    def close(self) -> None:
        if self._duckdb is not None:
            self._duckdb.close()
            self._duckdb = None


class _Sink:
    """Takes the parts of a conversion, in input order, for one publish: counts records,
    drops ids seen before (in this run) as duplicates, vectorized, quarantines rejects
    with their file, position, raw text and reason, and writes the rows."""

    def __init__(self, conv: Converter, pub):
        self.conv, self.pub = conv, pub
        self.rows_in = self.rows_out = 0
        self.seen = SeenKeys()  # hashes of the ids admitted so far
        self.rejects: Counter[str] = Counter()
        self.first: dict[str, tuple[str, int, str]] = {}  # reason -> its first file, position
        self.pending: list[dict[str, Any]] = []

    def take(self, part: tuple) -> int:
        """Book one part; the records it held."""
        if part[0] == "reject":
            self.rows_in += 1
            self.quarantine(*part[1:])
            return 1
        _, rows, origin = part
        self.rows_in += rows.height
        self._admit(rows, origin)
        return rows.height

    def quarantine(self, file: str, position: int, raw: str, reason: str, detail: str) -> None:
        self.rejects[reason] += 1
        self.first.setdefault(reason, (file, position, detail))
        self.pending.append({"stage": "convert", "source": self.conv.source, "file": file,
                             "position": position, "raw": raw, "reason": reason,
                             "detail": detail})
        if len(self.pending) >= ROWS_PER_PART:
            self.pub.reject(self.pending)
            self.pending = []

    def _admit(self, rows, origin) -> None:
        import polars as pl

        key = rows["id"].hash()
        dup = pl.Series(self.seen.contains(key.to_numpy())) | ~key.is_first_distinct()
        if dup.any():
            for o, (row_id, sha) in zip(origin.filter(dup).iter_rows(named=True),
                                        rows.filter(dup).select("id", "raw_sha1").iter_rows()):
                if row_id.endswith(sha[:16]):
                    self.quarantine(o["file"], o["position"], o["raw"], "duplicate_record",
                                    "an identical record was already converted")
                else:
                    self.quarantine(o["file"], o["position"], o["raw"], "duplicate_id",
                                    f"id {row_id} was already converted")
            rows, key = rows.filter(~dup), key.filter(~dup)
        self.seen.add(key.to_numpy())
        self.rows_out += rows.height
        if rows.height:
            self.pub.write(rows.select(CANONICAL.names).to_arrow().cast(CANONICAL))

    def close(self) -> None:
        self.pub.reject(self.pending)
        self.pending = []


@dataclass
class _FastChunk:
    """JSON Lines converted by a converter's `frame`: `lines` (a polars String Series of the
    raw lines, no blank ones) start at line `first_line`."""

    path: Path
    first_line: int
    lines: Any
    frame: Any


def _fast_chunks(conv: Converter, path: Path, span: Span | None = None,
                 chunk_bytes: int = 16 << 20):
    """JSON Lines (the file, or a span of it) for a converter's vectorized path, in chunks
    of whole lines (a line longer than `chunk_bytes` is read on to its end and goes with its
    chunk). Yields a `_FastChunk` for a chunk `frame` can take, else the list of the chunk's
    RawRecords (a blank line, malformed JSON, bytes that are not UTF-8, a field of another
    type or layout: the careful path handles and quarantines them)."""
    import io

    import polars as pl

    from meddata.readers import open_span

    if span is not None and span.begin is not None:
        raise ValueError(f"{path}: a JSON Lines span is read from its first line")
    first_line = span.first if span is not None else 1
    with open_span(path, span) as f:
        rest = b""
        while True:
            block = f.read(chunk_bytes)
            data = rest + block
            if not block:
                rest = b""
            else:
                cut = data.rfind(b"\n") + 1
                if cut == 0:  # a line longer than the block: read on to its end
                    rest = data
                    continue
                data, rest = data[:cut], data[cut:]
            if not data:
                break
            n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
            frame = lines = None
            try:  # a blank line makes the counts differ, and takes the careful path
                if not conv.fast_accepts(data):
                    raise ValueError("not for the vectorized path")
                lines = pl.read_csv(io.BytesIO(data), has_header=False, separator="\x1f",
                                    quote_char=None, schema={"raw": pl.String})["raw"]
                df = pl.read_ndjson(io.BytesIO(data))
                if df.height == len(lines) == n_lines and conv.fast_layout(df):
                    frame = conv.frame(df, str(path))
            except Exception:  # noqa: BLE001  (any surprise: take the careful path)
                frame = None
            if frame is not None:
                if b"\r" in data:
                    lines = lines.str.strip_suffix("\r")
                yield _FastChunk(path, first_line, lines, frame)
            else:
                records = (jsonl_record(str(path), first_line + offset, raw)
                           for offset, raw in enumerate(data.split(b"\n")[:n_lines]))
                yield [rec for rec in records if rec is not None]
            first_line += n_lines
            if not block:
                break


def _prefetch(items: Iterator, depth: int = 1) -> Iterator:
    """Iterate `items` on a background thread, `depth` items ahead: parsing the next chunk
    (polars, DuckDB; both release the GIL) overlaps with publishing this one."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as e:  # noqa: BLE001  (re-raised in the consumer)
            put((done, e))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name="meddata-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = q.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _file_items(conv: Converter, span: Span):
    """RawRecords of a span (a whole file, or a span of a large one), or `_FastChunk`s
    where the converter has a vectorized path and the file is JSON Lines."""
    from meddata.readers import base_suffix, sniff_json

    path = Path(span.path)
    suffix = base_suffix(path)
    jsonl = span.layout == "jsonl" or span.whole and (
        suffix in (".jsonl", ".ndjson") or (suffix == ".json" and sniff_json(path) == "jsonl"))
    if conv.fast and jsonl:
        chunks = _fast_chunks(conv, path, None if span.whole else span)
        with contextlib.closing(_prefetch(chunks)) as chunks:
            for chunk in chunks:
                if isinstance(chunk, list):
                    yield from chunk
                else:
                    yield chunk
    else:
        yield from conv.read(path) if span.whole else conv.read(path, span=span)


def convert_span(conv: Converter, span: Span) -> Iterator[tuple]:
    """The parts (see `_Converting`) of one span of a raw file (the whole file, or a span
    of a large one: meddata.ranges), in order, then `(END, span.number, where its reading
    stopped)`: what an engine runs for each span, here or in a worker."""
    span.reached = span.stop
    yield from convert_records(conv, _file_items(conv, span))
    yield (END, span.number, span.reached)


def convert_records(conv: Converter, records: Iterator) -> Iterator[tuple]:
    """The parts of a stream of RawRecords (and fast chunks), in order."""
    converting = _Converting(conv)
    try:
        yield from converting.items(records)
    finally:
        converting.close()
        close = getattr(records, "close", None)
        if close is not None:
            close()


def publish(conv: Converter, inputs: list[str], store: Store, name: str | None = None,
            max_reject_rate: float = 0.05, hub_config: str | None = None,
            progress: bool = True, engine: Engine | None = None,
            license: str | None = None) -> ConversionResult:
    """Convert `inputs` (files, folders, or one hub id) and publish canonical/<name>. The
    engine (default local) converts each file, a large JSON Lines, CSV or Parquet file in
    spans (meddata.ranges), on the Ray engine each span as a task of its own; the rows come
    back in file order: the same version on every engine and with any split. The version
    records the source's licence (`license` overrides the converter's)."""
    from meddata import licenses
    from meddata.progress import bar

    engine = engine or LocalEngine()
    name = name or conv.source
    terms = licenses.for_converter(type(conv), license)
    local = [p for p in inputs if Path(p).exists()]
    if len(local) == len(inputs):
        files = list_files(inputs)
        input_info = [{"path": str(f), "bytes": f.stat().st_size} for f in files]
        # hashed on a thread while the conversion runs (hashlib releases the GIL)
        hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meddata-sha256")
        digests = hashing.submit(lambda: [sha256_file(f) for f in files])
        hashing.shutdown(wait=False)
        empty = [f for f in files if is_empty(f)]
        if len(empty) == len(files):
            raise ConversionError(f"{conv.source}: " + (
                f"{empty[0]} is empty" if len(empty) == 1 else
                f"every input file is empty ({', '.join(map(str, empty))})") +
                "; nothing to convert")
        files = conv.prepare([f for f in files if f not in empty])
        check_looks_like(conv, files)
        empty_files = [str(f) for f in empty]
    elif len(inputs) == 1 and _HUB_ID.match(inputs[0]):
        files = None
        stream = hub_records(inputs[0], hub_config, conv.split)
        input_info = [{"hub_id": inputs[0], "config": hub_config, "split": conv.split}]
        digests, empty_files = None, []
    else:
        missing = [p for p in inputs if not Path(p).exists()]
        raise ConversionError(f"no such file or folder: {', '.join(missing)} "
                              "(a hub id must be the only input)")

    with store.publisher("canonical", name, CANONICAL, inputs=input_info,
                         recipe={"convert": conv.describe(), "engine": engine.describe()}
                         ) as pub, engine.session():
        sink = _Sink(conv, pub)
        with bar(f"convert {conv.source}", unit=" rec", enabled=progress) as b:
            try:
                parts = engine.convert_files(convert_span, conv, files) if files is not None \
                    else engine.convert_stream(convert_records, conv, stream)
            except NotImplementedError as e:
                raise ConversionError(str(e)) from None
            try:
                for part in parts:
                    b.update(sink.take(part))
            finally:
                close = getattr(parts, "close", None)
                if close is not None:
                    close()  # stops a prefetch thread at once when conversion fails
        sink.close()
        rows_in, rows_out, rejects = sink.rows_in, sink.rows_out, sink.rejects
        n_rejects = sum(rejects.values())
        if rows_in == 0:
            raise ConversionError(f"{conv.source}: the input holds no records")
        rate = n_rejects / rows_in
        if rate > max_reject_rate:
            reason, count = rejects.most_common(1)[0]
            file, position, detail = sink.first[reason]
            raise ConversionError(
                f"{conv.source}: {n_rejects} of {rows_in} records rejected ({rate:.1%} > limit "
                f"{max_reject_rate:.1%}); commonest reason: {reason} ({count}), first in "
                f"{file} at position {position}{f': {detail}' if detail else ''}; nothing "
                f"published (--max-reject-rate publishes them, each in the version's rejects)")
        if digests is not None:
            for info, digest in zip(input_info, digests.result()):
                info["sha256"] = digest
            pub.extra["inputs"] = input_info
        pub.extra["convert_report"] = {**conv.report(),
                                       **({"empty_files": empty_files} if empty_files else {})}
        pub.extra["licenses"] = [terms]
        pub.add_stage("convert", rows_in, rows_out, dict(rejects))
    recorded = licenses.ids(licenses.of_manifest(pub.version.manifest))
    if recorded != [terms["license"]]:  # identical rows were already published
        raise ConversionError(
            f"{pub.version.ref} already holds these rows, recorded under licence "
            f"{', '.join(recorded)}; a version never changes, so publish under another "
            f"--name to record {terms['license']}")
    return ConversionResult(pub.version, rows_in, rows_out, rejects)
