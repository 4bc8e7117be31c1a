"""Large input files split into spans that tasks convert one each, with the same records,
positions and ids as one reader over the whole file.

A file larger than RANGE_BYTES is split when its layout allows it:

- **JSON Lines**: a record is a line, so a span may start at any line start. Each chunk of
  RANGE_BYTES is counted (its newlines) and offers the first line start inside it; the
  driver adds the counts up (prefix sums), so each span knows the number of its first line.
- **CSV**: a record may run over several lines inside a quoted field, so a line start is a
  record start only outside quotes. Each chunk is counted (newlines and lone carriage
  returns, which end lines too, and quote characters) and offers, for an even and for an
  odd number of quotes before it, its first line start with an even number of quotes
  before it; the driver's prefix sums of the quote counts pick one (or the other, where
  the one picked does not exist: see `_line_spans`). Quotes and line ends
  are single bytes that no multi-byte character of UTF-8 or GB18030 (or any cp1252 byte)
  contains, so counting bytes counts characters. A stray quote in an unquoted field can
  still fool the count, and a broken record recovers over the lines after it: each span's
  reader therefore stops only at a line where it holds nothing (`read_csv`), reports that
  line, and `stitch` reads on from there whenever it is not where the next span begins,
  dropping what that span's task read. Splitting is then a matter of speed, never of what
  comes out.
- **Parquet**: runs of whole row groups of about RANGE_BYTES (compressed), numbered from
  the row counts in the file's footer.

Read whole, as one span: a file of at most RANGE_BYTES; a gzip file (a stream is read from
its start); a file with a UTF-16 or UTF-32 byte order mark (it is transcoded from its start,
and a byte offset is no character boundary); plain text (one document per file); a JSON
array or object (one stream); and any file of a converter whose `read` takes no span.

The split depends on the files alone, never on the number of workers, so the version id
is the same on any engine and any number of CPUs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from meddata.readers import _WIDE_BOMS, Span, base_suffix, detect_encoding, sniff_json

#: the bytes a span holds (about); the tests make it small
RANGE_BYTES = 64 << 20
COUNT_BLOCK = 1 << 20  # what a counting task reads at once
END = "end"  # the last part of a span: (END, span number, where its reading stopped)


@dataclass(frozen=True)
class Chunk:
    """RANGE_BYTES of a JSON Lines or CSV file, counted by one task."""

    file: int
    path: str
    layout: str
    start: int
    end: int


@dataclass(frozen=True)
class Cut:
    """A line start inside a chunk: its byte offset, and the lines that end in the chunk
    before it."""

    offset: int
    lines: int


@dataclass(frozen=True)
class Count:
    """What a counting task found in its chunk: the lines that end in it, its quote
    characters (CSV), and its first line start after an even number of quotes counted
    from the file's start, for an even and for an odd number before the chunk (JSON Lines:
    its first line start, twice)."""

    lines: int
    quotes: int
    cuts: tuple[Cut | None, Cut | None]


def takes_spans(conv: Any) -> bool:
    """Whether the converter's `read` takes a span (a converter whose `read` takes only a
    path reads each file whole)."""
    return "span" in inspect.signature(conv.read).parameters


def split_layout(path: Path, range_bytes: int) -> str | None:
    """`jsonl`, `csv` or `parquet` for a file split into spans; None for one read whole."""
    if path.name.lower().endswith(".gz") or path.stat().st_size <= range_bytes:
        return None
    suffix = base_suffix(path)
    if suffix == ".parquet":
        return "parquet"
    with open(path, "rb") as f:
        head = f.read(4)
    if any(head.startswith(bom) for bom, _ in _WIDE_BOMS):
        return None
    if suffix in (".jsonl", ".ndjson") or suffix == ".json" and sniff_json(path) == "jsonl":
        return "jsonl"
    return "csv" if suffix == ".csv" else None


class FileRanges:
    """The spans of a conversion's files: `chunks` lists what the counting tasks count
    (`count_chunk`, run anywhere, in any order); `spans(counts)`, given their counts in
    the chunks' order, plans the spans, in file order, then in order within each file."""

    def __init__(self, conv: Any, files: list[Path], range_bytes: int | None = None):
        self.files = [Path(f) for f in files]
        self.range_bytes = range_bytes or RANGE_BYTES
        split = takes_spans(conv)
        self.layouts = [split_layout(f, self.range_bytes) if split else None
                        for f in self.files]
        self.chunks_of = [self._chunks(i) for i in range(len(self.files))]
        self.chunks = [c for chunks in self.chunks_of for c in chunks]

    def _chunks(self, i: int) -> list[Chunk]:
        if self.layouts[i] not in ("jsonl", "csv"):
            return []
        size, step = self.files[i].stat().st_size, self.range_bytes
        return [Chunk(i, str(self.files[i]), self.layouts[i], start, min(start + step, size))
                for start in range(0, size, step)]

    def spans(self, counts: Iterable[Count]) -> list[Span]:
        counts = list(counts)
        if len(counts) != len(self.chunks):
            raise ValueError(f"{len(counts)} counts for {len(self.chunks)} chunks")
        spans: list[Span] = []
        at = 0
        for i, (path, layout) in enumerate(zip(self.files, self.layouts)):
            chunks = self.chunks_of[i]
            file_counts, at = counts[at:at + len(chunks)], at + len(chunks)
            if layout == "parquet":
                spans += _row_group_spans(path, len(spans), self.range_bytes)
            elif layout is not None:
                spans += _line_spans(path, layout, len(spans), chunks, file_counts)
            else:
                spans.append(Span(str(path), len(spans)))
        return spans


def _line_spans(path: Path, layout: str, number: int, chunks: list[Chunk],
                counts: list[Count]) -> list[Span]:
    """The spans of a JSON Lines or CSV file, from its chunks' counts: each chunk after the
    first offers the line start its parity of quotes so far picks, else the other one (a
    stray quote flips the count for the rest of the file; where no line start of a chunk
    has the parity counted, every one has the other, and in a CSV without quoted fields
    over several lines they are all record starts; the reading checks it anyway)."""
    size = path.stat().st_size
    starts = [(0, 1)]  # (byte offset, line number)
    quotes, line = 0, 1
    for chunk, count in zip(chunks, counts):
        cut = (count.cuts[quotes % 2] or count.cuts[1 - quotes % 2]) if chunk.start else None
        if cut is not None and cut.offset < size:
            starts.append((cut.offset, line + cut.lines))
        quotes += count.quotes
        line += count.lines
    encoding = detect_encoding(path) if layout == "csv" and len(starts) > 1 else None
    return [Span(str(path), number + k, k, layout, start, nxt[0] if nxt else None, first,
                 nxt[1] if nxt else None, encoding=encoding)
            for k, ((start, first), nxt) in enumerate(
                zip(starts, [*starts[1:], None]))]


def _row_group_spans(path: Path, number: int, range_bytes: int) -> list[Span]:
    """The spans of a Parquet file: runs of whole row groups of about `range_bytes`."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    starts, rows, held = [(0, 1)], 0, 0  # (row group, row number)
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        if held >= range_bytes:
            starts.append((g, rows + 1))
            held = 0
        held += sum(group.column(c).total_compressed_size for c in range(group.num_columns))
        rows += group.num_rows
    bounds = [*starts[1:], (meta.num_row_groups, None)]
    return [Span(str(path), number + k, k, "parquet" if len(starts) > 1 else None,
                 first=first, stop=nxt_first, row_groups=(g, nxt_g))
            for k, ((g, first), (nxt_g, nxt_first)) in enumerate(zip(starts, bounds))]


# ---- counting ----------------------------------------------------------------------------
def count_chunk(chunk: Chunk) -> Count:
    """A chunk's line ends, quotes and cuts (see `Count`), read COUNT_BLOCK at a time (and
    the byte after each block: a carriage return before a newline is not a line end)."""
    csv = chunk.layout == "csv"
    lines = quotes = 0
    cuts: list[Cut | None] = [None, None]
    with open(chunk.path, "rb") as f:
        at = chunk.start
        while at < chunk.end:
            f.seek(at)
            n = min(COUNT_BLOCK, chunk.end - at)
            data = f.read(n + 1)
            n = min(n, len(data))
            if n == 0:
                break  # the file shrank since it was planned: the reading will tell
            if chunk.start and None in cuts:
                found = _line_starts(data, n, csv)
                for parity in (0, 1):
                    cut = found[(parity + quotes) % 2]
                    if cuts[parity] is None and cut is not None:
                        cuts[parity] = Cut(at + cut, lines + _line_ends(data, cut, csv))
            lines += _line_ends(data, n, csv)
            quotes += data.count(b'"', 0, n) if csv else 0
            at += n
    return Count(lines, quotes, (cuts[0], cuts[1]))


def _line_starts(data: bytes, n: int, csv: bool) -> tuple[int | None, int | None]:
    """The offsets after the first newline in data[:n] with an even, and with an odd,
    number of quote characters before it in `data` (JSON Lines: the first newline's,
    twice)."""
    import numpy as np

    if not csv:
        cut = data.find(b"\n", 0, n)
        return (cut + 1, cut + 1) if cut >= 0 else (None, None)
    block = np.frombuffer(data, np.uint8, n)
    newlines = np.flatnonzero(block == ord("\n"))
    odd = np.logical_xor.accumulate(block == ord('"'))[newlines]  # (a newline is no quote)
    found = []
    for parity in (False, True):
        at = newlines[odd == parity]
        found.append(int(at[0]) + 1 if at.size else None)
    return found[0], found[1]


def _line_ends(data: bytes, n: int, csv: bool) -> int:
    """The line ends in data[:n]: newlines; for CSV also lone carriage returns (the byte
    after data[:n], when `data` has it, tells whether its last byte is one)."""
    ends = data.count(b"\n", 0, n)
    if csv:
        ends += data.count(b"\r", 0, n) - data.count(b"\r\n", 0, n + 1)
    return ends


# ---- reading the spans in order ------------------------------------------------------------
def stitch(spans: list[Span], run_here: Callable[[Span], Iterator[tuple]],
           ahead: Iterator[tuple] | None = None,
           dropped: set[int] | None = None) -> Iterator[tuple]:
    """The parts of the spans, in order, as one reader of each whole file gives them.

    Each span's parts end with (END, its number, where its reading stopped). A span is
    taken as read when the span before stopped at its first line; otherwise (a CSV record
    or a broken record's recovery ran over the boundary) it is read again here by
    `run_here`, from where the span before stopped, or skipped when the span before read
    on over all of it. `ahead` holds the spans' parts as an engine's tasks gave them, in
    order; without it every span is read by `run_here`. The numbers of the spans whose
    parts from `ahead` were not used go into `dropped`."""
    dropped = set() if dropped is None else dropped
    reached: int | None = None  # where the span before stopped (None: at the file's end)
    for span in spans:
        own = _parts_of(ahead, span.number) if ahead is not None else None
        if span.part and reached is not None and reached < span.first:
            raise RuntimeError(f"{span.path}: a span's reading stopped at line {reached}, "
                               f"before the next span's line {span.first}: did the file "
                               "change while it was converted?")
        if span.part == 0 or reached == span.first:
            parts = own if own is not None else run_here(span)
        else:
            if own is not None:
                for _ in own:
                    pass
                dropped.add(span.number)
            if reached is None or span.stop is not None and reached >= span.stop:
                continue
            parts = run_here(replace(span, begin=reached))
        for part in parts:
            if part[0] == END:
                reached = part[2]
            else:
                yield part


def _parts_of(ahead: Iterator[tuple], number: int) -> Iterator[tuple]:
    """The parts of span `number` from `ahead`, its END part included."""
    for part in ahead:
        yield part
        if part[0] == END:
            if part[1] != number:
                raise RuntimeError(f"span {part[1]} ended where span {number} was due")
            return
    raise RuntimeError(f"the parts of span {number} ended without its end")
