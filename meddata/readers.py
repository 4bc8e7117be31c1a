"""Streaming readers for raw source files.

Each reader yields `RawRecord`s: the parsed record (or None when it could not be parsed),
the file, a 1-based position (line number for line formats, record index otherwise) and the
raw text. A record that cannot be parsed is yielded with `error` set, so the caller can
quarantine it: nothing is lost and nothing stops the stream.

Formats: JSON Lines (`.jsonl`, `.ndjson`, and `.json` files that hold one object per line),
a JSON array, a JSON object keyed by id (streamed with ijson), Parquet, CSV and plain text
(one document per file; both decoded line by line: UTF-8, GB18030 or cp1252, whichever
reads cleanly, see `decode_line`), and any of these compressed with gzip (`.gz`). A folder is read file by file in sorted order.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".csv", ".txt")


@dataclass
class RawRecord:
    file: str
    position: int
    raw: str
    record: Any = None
    key: str | None = None  # the object key, for JSON objects keyed by id
    error: str | None = None
    split: str | None = None  # the split a hub dataset names

    def part(self, record: dict[str, Any]) -> RawRecord:
        """One of the records this one expands into (a CMB-Clin case's question-answer pair,
        one of a Huatuo-26M question's answers): same file, position and split, its own
        JSON as raw text."""
        return RawRecord(self.file, self.position, json.dumps(record, ensure_ascii=False),
                         record, split=self.split)


@dataclass
class Span:
    """What one task reads of an input file: the whole file, or one of the byte ranges of a
    large JSON Lines or CSV file, or one of the runs of row groups of a large Parquet file
    (meddata.ranges plans them). Positions (line numbers; row numbers in Parquet) count from
    the file's start, so a record's position, and everything built from it, is the same
    however the file is split."""

    path: str
    number: int = 0          # its place among every span of one conversion
    part: int = 0            # its place among its file's spans
    layout: str | None = None  # `jsonl`, `csv` or `parquet`; None for a whole file
    start: int = 0           # byte offset of its first line
    end: int | None = None   # byte offset of the next span's first line (None: the file's end)
    first: int = 1           # position of its first line (or row)
    stop: int | None = None  # position of the next span's first line (or row); None: the end
    row_groups: tuple[int, int] | None = None  # Parquet: the row groups [from, to)
    encoding: str | None = None  # CSV: the file's first-choice encoding, from its start
    begin: int | None = None     # read from this line on: resumed where the span before stopped
    #: where the reading stopped, set by the reader: `stop` for JSON Lines and Parquet; for
    #: CSV the first line at or after `stop` where no record is open (a record that starts
    #: before `stop` is read on to its end), None at the file's end
    reached: int | None = None

    @property
    def whole(self) -> bool:
        return self.part == 0 and self.stop is None


def base_suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return Path(name).suffix


def list_files(paths: list[str | Path]) -> list[Path]:
    """Expand folders into their supported files, sorted; keep explicit files as given."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and base_suffix(f) in SUFFIXES)
            if not found:
                raise FileNotFoundError(f"{p}: folder holds no {', '.join(SUFFIXES)} files")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return out


BOM = b"\xef\xbb\xbf"


_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"),
              (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))


def _undecodable(error: UnicodeDecodeError) -> tuple[str, int]:
    """Bytes of a wide-encoded file that do not decode: a lone surrogate, which becomes
    bytes that are not UTF-8, so the record holding them is rejected, never stored."""
    return "\udcff", error.end


class _Transcoded(io.RawIOBase):
    """A UTF-16 or UTF-32 file (one with a byte order mark) read as UTF-8 bytes, streamed:
    the readers split lines and parse JSON on UTF-8 bytes, where a newline byte inside a
    wide character would cut a record in two."""

    def __init__(self, f: BinaryIO, encoding: str, skip: int):
        import codecs

        self.f, self.encoding, self.skip = f, encoding, skip
        codecs.register_error("meddata-undecodable", _undecodable)
        self._decoder = codecs.getincrementaldecoder(encoding)("meddata-undecodable")
        self._pending = b""
        self.seek(0)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        raise io.UnsupportedOperation("a transcoded file has no byte offsets")

    def seek(self, offset: int, whence: int = 0) -> int:
        if (offset, whence) != (0, 0):
            raise io.UnsupportedOperation("a transcoded file seeks only to its start")
        self.f.seek(self.skip)
        self._decoder.reset()
        self._pending = b""
        return 0

    def readinto(self, buffer) -> int:
        while not self._pending:
            raw = self.f.read(1 << 16)
            self._pending = self._decoder.decode(raw, final=not raw).encode(
                "utf-8", "surrogatepass")
            if not raw:
                break
        n = min(len(buffer), len(self._pending))
        buffer[:n], self._pending = self._pending[:n], self._pending[n:]
        return n

    def close(self) -> None:
        self.f.close()
        super().close()


def _open(path: Path) -> BinaryIO:
    """The file's bytes (gunzipped for .gz), after a UTF-8 byte order mark if it has one:
    a BOM is not data. A file with a UTF-16 or UTF-32 byte order mark is read as UTF-8
    (bytes that do not decode stay bytes that are not UTF-8: their record is a reject)."""
    f = gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")
    head = f.read(4)
    for bom, encoding in _WIDE_BOMS:
        if head.startswith(bom):
            return io.BufferedReader(_Transcoded(f, encoding, len(bom)))
    f.seek(3 if head.startswith(BOM) else 0)
    return f


def _open_at(path: Path, start: int) -> BinaryIO:
    """The file's bytes from byte offset `start` on (from 0: as `_open` reads them)."""
    if start == 0:
        return _open(path)
    f = open(path, "rb")
    f.seek(start)
    return f


class _Window(io.RawIOBase):
    """An open file's bytes up to byte offset `end`: a span read as a file of its own."""

    def __init__(self, f: BinaryIO, end: int):
        self.f, self.left = f, max(0, end - f.tell())

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.f.readinto(memoryview(buffer)[:min(len(buffer), self.left)]) or 0
        self.left -= n
        return n

    def close(self) -> None:
        self.f.close()
        super().close()


def open_span(path: Path, span: Span | None = None) -> BinaryIO:
    """The bytes of a span of the file (all of it without one), as `_open` reads them."""
    if span is None:
        return _open(path)
    f = _open_at(path, span.start)
    return f if span.end is None else io.BufferedReader(_Window(f, span.end))


def is_empty(path: Path) -> bool:
    """True when the file holds nothing but whitespace (and perhaps a BOM)."""
    with _open(path) as f:
        while block := f.read(1 << 16):
            if block.strip():
                return False
    return True


_KEYED_BY_ID = re.compile(r'^\{\s*"(?:[^"\\]|\\.)*"\s*:\s*\{')


def _first_line(f: BinaryIO, head: bytes) -> tuple[bytes, bytes]:
    """(the first line's bytes, up to 64 KB of it, and the next lines' bytes after it in
    `head`): reads on past the head while the first line has no end, keeping none of it."""
    end = head.find(b"\n")
    if end >= 0:
        return head[:end], head[end + 1:]
    while block := f.read(1 << 20):  # a first line longer than the head: find its end
        end = block.find(b"\n")
        if end >= 0:
            return head, block[end + 1:end + 1 + (1 << 16)]
    return head, b""


def sniff_json(path: Path) -> str:
    """`jsonl`, `array` or `object` for a .json file, from its first bytes and the shape of
    its first lines, never from whether the first record parses: a broken, deeply nested or
    very long first line of a JSON Lines file costs that line, not the file.

    `[` starts an array. A file of several lines whose second line starts with `{` holds
    one record per line; one whose second line starts with a key (`"...":`) or `}` is a
    pretty-printed object. A single line is parsed when it is short: an object of
    objects is keyed by id, anything else is one record; a long or broken single line is
    keyed by id when its first member's value is an object."""
    with _open(path) as f:
        head = f.read(1 << 16)
        text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
        if text.startswith(b"["):
            return "array"
        first, after = _first_line(f, text)
    second = next((ln.strip() for ln in after.split(b"\n") if ln.strip()), None)
    if second is not None:
        if second.startswith((b'"', b"}", b"]")) or not first.strip().startswith(b"{"):
            return "object"  # a pretty-printed object (or a broken file: the reader says where)
        if second.startswith(b"{") or first.rstrip().endswith(b"}"):
            return "jsonl"
        return "object"
    line = first.decode("utf-8", errors="replace").strip()
    if len(first) < (1 << 16):
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):
            value = None
        else:  # a single line: an object of objects is keyed by id, anything else one record
            if isinstance(value, dict) and value and all(isinstance(v, dict)
                                                         for v in value.values()):
                return "object"
            return "jsonl"
    if not line.startswith("{"):
        return "object"  # not JSON at all: the object reader rejects it whole, saying why
    return "object" if _KEYED_BY_ID.match(line) else "jsonl"


def read_file(path: Path, span: Span | None = None) -> Iterator[RawRecord]:
    """The records of a file, or of one span of it (see `Span`; meddata.ranges splits only
    JSON Lines, CSV and Parquet files)."""
    if span is not None and not span.whole:
        readers = {"jsonl": read_jsonl, "parquet": read_parquet,
                   "csv": lambda p, s: read_csv(p, span=s)}
        if span.layout not in readers:
            raise ValueError(f"{path}: a {span.layout} file is read whole, not in spans")
        yield from readers[span.layout](path, span)
        return
    suffix = base_suffix(path)
    if suffix in (".jsonl", ".ndjson"):
        yield from read_jsonl(path)
    elif suffix == ".json":
        layout = sniff_json(path)
        yield from (read_jsonl(path) if layout == "jsonl" else read_json(path, layout))
    elif suffix == ".parquet":
        yield from read_parquet(path)
    elif suffix == ".csv":
        yield from read_csv(path)
    elif suffix == ".txt":
        yield from read_text(path)
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r} "
                         f"(supported: {', '.join(SUFFIXES)}, optionally .gz)")


def _loads(text: str) -> tuple[Any, str | None]:
    """(value, None) or (None, why it is not JSON): bad syntax, or nesting too deep."""
    try:
        return json.loads(text), None
    except ValueError as e:
        return None, f"invalid JSON: {e}"
    except RecursionError:
        return None, "invalid JSON: nested too deeply to parse"


def jsonl_record(file: str, lineno: int, line: bytes) -> RawRecord | None:
    """One JSON Lines line as a RawRecord (None for a blank line)."""
    if lineno == 1 and line.startswith(BOM):
        line = line[3:]
    if not line.strip():
        return None
    try:
        text = line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        return RawRecord(file, lineno, line.decode("utf-8", errors="replace").rstrip("\r\n"),
                         error=f"not UTF-8: {e}")
    value, error = _loads(text)
    return RawRecord(file, lineno, text, value, error=error)


def read_jsonl(path: Path, span: Span | None = None) -> Iterator[RawRecord]:
    """The lines of the file, or of a span of it (its byte range, numbered from its first
    line's number)."""
    name = str(path)
    first = span.first if span is not None else 1
    begin = (span.begin or first) if span is not None else 1
    with open_span(path, span) as f:
        for lineno, line in enumerate(f, first):
            rec = jsonl_record(name, lineno, line) if lineno >= begin else None
            if rec is not None:
                yield rec


def read_json(path: Path, layout: str) -> Iterator[RawRecord]:
    """Stream a JSON array (items) or a JSON object keyed by id (key, value pairs).

    ijson parses the file as long as it is valid. At the first error (a byte that is not
    UTF-8, a broken record, a record nested too deeply to serialize) the file is read again
    from the start with `json_elements`, which finds where each top-level element begins
    and ends without parsing it; the elements ijson already gave are skipped and each of
    the rest is parsed alone, so a broken element costs only itself."""
    import ijson

    name = str(path)
    done = 0
    with _open(path) as f:
        try:
            if layout == "array":
                for item in ijson.items(f, "item", use_float=True):
                    raw = _dump(item)
                    yield RawRecord(name, done + 1, raw, item)
                    done += 1
            else:
                for key, item in ijson.kvitems(f, "", use_float=True):
                    raw = _dump({key: item})
                    yield RawRecord(name, done + 1, raw, item, key=key)
                    done += 1
            return
        except (ijson.JSONError, RecursionError, UnicodeDecodeError):
            pass  # recover element by element below
    for position, (element, error) in enumerate(json_elements(path, layout), 1):
        if position <= done:
            continue
        text = element.decode("utf-8", errors="replace").strip()
        if error:
            yield RawRecord(name, position, text, error=error)
            continue
        try:
            element.decode("utf-8")
        except UnicodeDecodeError as e:
            yield RawRecord(name, position, text, error=f"not UTF-8: {e}")
            continue
        if layout == "array":
            value, error = _loads(text)
            key = None
        else:
            pair, error = _loads("{" + text + "}")
            key, value = next(iter(pair.items())) if isinstance(pair, dict) and len(pair) == 1 \
                else (None, None)
            if error is None and key is None:
                error = "invalid JSON: expected one \"key\": value member"
        if error is None:
            try:
                raw = _dump(value if layout == "array" else {key: value})
            except RecursionError:
                error = "invalid JSON: nested too deeply to parse"
        if error:
            yield RawRecord(name, position, text, error=error)
        else:
            yield RawRecord(name, position, raw, value, key=key)


_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"?|[\[\]{},]')


def json_elements(path: Path, layout: str, block_bytes: int = 1 << 22
                  ) -> Iterator[tuple[bytes, str | None]]:
    """The top-level elements of a JSON array (or members of an object) as raw bytes, each
    with None or the reason the file's structure around it is broken. A string-aware scan
    (strings are skipped whole, brackets counted outside them) finds the commas at depth one
    that separate elements; nothing is parsed. Empty elements (a trailing comma) are not
    elements; text after the closing bracket is one broken element."""
    opener = b"[" if layout == "array" else b"{"
    closer = b"]" if layout == "array" else b"}"
    with _open(path) as f:
        buf = f.read(block_bytes)
        eof = not buf
        stripped = buf.lstrip()
        if not stripped.startswith(opener):
            if buf.strip():
                rest = buf + f.read()
                yield rest, f"invalid JSON: expected the file to start with {opener.decode()}"
            return
        buf = stripped[1:]
        depth, start, pos, closed = 1, 0, 0, False
        while True:
            for m in _JSON_TOKEN.finditer(buf, pos):
                tok = m.group()
                if tok[:1] == b'"':
                    if len(tok) < 2 or not tok.endswith(b'"') or tok.endswith(b'\\"') and \
                            _escaped_end(tok):
                        if not eof:  # a string cut by the block end: read more first
                            pos = m.start()
                            break
                    continue
                if tok in b"[{":
                    depth += 1
                elif tok in b"]}":
                    depth -= 1
                    if depth == 0:
                        element = buf[start:m.start()]
                        if element.strip():
                            yield element, None if tok == closer else \
                                "invalid JSON: mismatched brackets"
                        tail = buf[m.end():] + f.read()
                        if tail.strip():
                            yield tail, "invalid JSON: text after the closing bracket"
                        closed = True
                        break
                elif depth == 1:  # a comma between elements
                    element = buf[start:m.start()]
                    if element.strip():
                        yield element, None
                    start = m.end()
            else:
                pos = len(buf)
            if closed:
                return
            if eof:
                element = buf[start:]
                if element.strip():
                    yield element, "invalid JSON: the file ends inside this element"
                return
            block = f.read(block_bytes)
            eof = not block
            buf, pos = buf[start:] + block, pos - start
            start = 0


def _escaped_end(tok: bytes) -> bool:
    """Whether the final quote of `tok` is escaped (an odd run of backslashes before it)."""
    run = len(tok) - 1 - len(tok[:-1].rstrip(b"\\"))
    return run % 2 == 1


def read_parquet(path: Path, span: Span | None = None) -> Iterator[RawRecord]:
    """The rows of the file, or of a span's row groups (numbered from its first row's)."""
    import pyarrow.parquet as pq

    name = str(path)
    groups = range(*span.row_groups) if span is not None and span.row_groups else None
    position = span.first - 1 if span is not None else 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096, row_groups=groups):
        for row in batch.to_pylist():
            position += 1
            yield RawRecord(name, position, _dump(row), row)


ENCODING_SAMPLE_BYTES = 4 << 20
CSV_RECORD_BYTES = 64 << 20  # a record, its quoted fields over any number of lines included
CSV_RESYNC_LINES = 1_000     # after a broken record, a quoted field may run over this many
CSV_RESYNC_BYTES = 1 << 20   # lines and bytes before its first line is taken for broken too
_FALLBACK = "cp1252"         # Latin text (Windows-1252 / Latin-1), for lines in neither


def _gb_clean(text: str) -> bool:
    """Whether a line decoded as GB18030 reads as Chinese: at least three quarters of its
    non-ASCII characters are GB2312 characters. Latin-1 or cp1252 bytes decoded as GB18030
    pair with the next byte into rare characters outside GB2312 (mojibake)."""
    n = len(text) - len(text.encode("ascii", errors="ignore"))
    if not n:
        return True
    rare = text.encode("gb2312", errors="replace").count(b"?") - text.count("?")
    return rare * 4 <= n


_NON_ASCII_PAIR = re.compile(r"[^\x00-\x7f]{2}")
_DOUBLE_ENCODED = re.compile(r"[\u00c2-\u00f4][\u0080-\u00bf\u0152-\u2122]")


def _latin_clean(text: str) -> bool:
    """Whether a line decoded as cp1252 reads as Latin text: its non-ASCII characters stand
    alone ("café", "don’t"); UTF-8 or GB18030 bytes read as cp1252 come in runs."""
    return _NON_ASCII_PAIR.search(text) is None


def _double_encoded(text: str) -> bool:
    """Whether UTF-8 text is UTF-8 read as cp1252 once before ("cafÃ©"): the round trip
    back through cp1252 gives valid UTF-8."""
    if _DOUBLE_ENCODED.search(text) is None:
        return False
    try:
        text.encode(_FALLBACK).decode("utf-8")
    except UnicodeError:
        return False
    return True


def detect_encoding(path: Path) -> str:
    """The file's first-choice encoding, from its lines, so that a stray byte cannot flip a
    file: `gb18030` when more non-ASCII lines in the first 4 MB read as Chinese in GB18030
    (and fail as UTF-8) than decode as UTF-8, else `utf-8`. Each line is then decoded on its
    own (`decode_line`): the first choice, the other of the two, then cp1252 for Latin text;
    a line that reads cleanly in none of them is rejected, never stored garbled."""
    with _open(path) as f:
        data = f.read(ENCODING_SAMPLE_BYTES)
        if f.read(1):
            data = data[:data.rfind(b"\n") + 1] or data  # whole lines only
    good = gb = 0
    for line in data.split(b"\n"):
        if line.isascii():
            continue
        try:
            line.decode("utf-8")
            good += 1
        except UnicodeDecodeError:
            try:
                gb += _gb_clean(line.decode("gb18030"))
            except UnicodeDecodeError:
                pass
    return "gb18030" if gb > good else "utf-8"


def decode_line(line: bytes, encoding: str) -> tuple[str, str | None]:
    """(text, None), or (text with replacement characters, why) for a line that reads
    cleanly in none of `encoding`, the other of UTF-8 / GB18030, and cp1252. UTF-8 text
    that a round trip shows was double-encoded ("cafÃ©") is not clean either."""
    if line.isascii():
        return line.decode("ascii"), None
    order = (encoding, "gb18030" if encoding == "utf-8" else "utf-8", _FALLBACK)
    for enc in order:
        try:
            text = line.decode(enc)
        except UnicodeDecodeError:
            continue
        if enc == "utf-8" and not _double_encoded(text) or \
                enc == "gb18030" and _gb_clean(text) or enc == _FALLBACK and _latin_clean(text):
            return text, None
    text = line.decode(encoding, errors="replace")
    try:
        line.decode(encoding)
        why = "decodes only to garbled text (mojibake)"
    except UnicodeDecodeError as e:
        why = f"{e.reason} at byte {e.start}"
    return text, (f"not {encoding}: {why}; nor readable as "
                  f"{' or '.join(order[1:])}")


_LONE_CR = re.compile(rb"(?<=\r)(?!\n)")  # the place after a CR that ends a line by itself


def _cr_lines(f: BinaryIO) -> Iterator[bytes]:
    """The file's lines, where a lone CR (old Mac line ends) ends a line too."""
    for line in f:
        if b"\r" in line:
            yield from (part for part in _LONE_CR.split(line) if part)
        else:
            yield line


class _Lines:
    """(line number, text, None or why the line does not decode) for each physical line,
    decoded line by line (`decode_line`); `restart(lineno)` reads again from a line. With a
    span, the lines from its first byte on (to the file's end), numbered from its first
    line's number, from its `begin` line on."""

    def __init__(self, path: Path, encoding: str, span: Span | None = None):
        self.path, self.encoding = path, encoding
        self.start, self.first = (span.start, span.first) if span is not None else (0, 1)
        self._it = self._read((span.begin or span.first) if span is not None else 1)

    def _read(self, start: int) -> Iterator[tuple[int, str, str | None]]:
        with _open_at(self.path, self.start) as f:
            for lineno, line in enumerate(_cr_lines(f), self.first):
                if lineno >= start:
                    yield (lineno, *decode_line(line, self.encoding))

    def restart(self, lineno: int) -> None:
        self._it.close()
        self._it = self._read(lineno)

    def next(self):
        return next(self._it, None)

    def close(self) -> None:
        self._it.close()


def _csv_fields(text: str) -> tuple[list[str] | None, bool, bool]:
    """(fields, complete, strict): complete is False while `text` ends inside a quoted
    field; strict is False when only a lenient reading parses it (a stray quote inside a
    field), or none does (then the text is one field)."""
    try:
        rows = list(csv.reader(io.StringIO(text), strict=True))
    except csv.Error as e:
        if "unexpected end of data" in str(e):
            return None, False, False
        try:
            rows = list(csv.reader(io.StringIO(text)))  # lenient, as CSV readers are
        except csv.Error:  # (a carriage return alone inside a field)
            return [text], True, False
        return (rows[0] if rows else []), True, False
    return (rows[0] if rows else []), True, True


def _stray_quote(text: str) -> bool:
    """Whether a quote stands inside an unquoted field (`E 输血",C,...`: the last line of a
    quoted field, read on its own). CSV readers take such a quote literally; a record that
    needs that leniency does not end a broken record's recovery."""
    in_quotes, start, i, n = False, True, 0, len(text)
    while i < n:
        c = text[i]
        if in_quotes:
            if c == '"':
                if i + 1 < n and text[i + 1] == '"':
                    i += 2
                    continue
                in_quotes = False
        elif c == '"':
            if not start:
                return True
            in_quotes = True
        start = not in_quotes and c in ",\r\n"
        i += 1
    return False


def read_csv(path: Path, fields: list[str] | None = None,
             span: Span | None = None) -> Iterator[RawRecord]:
    """CSV records as dicts keyed by the header row (or by `fields`, for files without a
    header). A quoted field may span any number of lines, up to CSV_RECORD_BYTES; one
    longer than that, that closes further on, is one reject (its text cut at the bound),
    and reading goes on after it.

    A record that is broken (a quote that never closes, or the wrong number of fields)
    costs one reject: its first line, and then the lines that do not form a record of
    their own either (a broken record's other lines); the first line that starts a whole
    record with the header's fields ends it. So a file never yields more records than it
    has record starts. While recovering, a quoted field may run over at most
    CSV_RESYNC_LINES lines and CSV_RESYNC_BYTES bytes. A record that does not decode is a
    reject with its text.

    With a span (meddata.ranges), the records from the span's first line on, in the file's
    encoding and under its header (read from the file's start), until the first line at or
    after the span's `stop` where the reader holds nothing: no record open, no broken
    record being recovered. There the reader's state is what it is at the start of the
    next span, so the span after it, read on its own from that line, gives what one reader
    over the whole file gives. The line is recorded in `span.reached`; where it is not the
    next span's first line (a record ran over the boundary), the caller reads on from it
    (`meddata.ranges.stitch`)."""
    import sys

    csv.field_size_limit(min(sys.maxsize, (1 << 31) - 1))
    if span is None or span.whole:
        reader = _CsvRecords(path, detect_encoding(path), fields)
        with contextlib.closing(reader):
            yield from reader.records()
        return
    encoding = span.encoding or detect_encoding(path)
    reader = _CsvRecords(path, encoding, fields, span)
    with contextlib.closing(reader):
        if reader.header is None and span.part > 0:
            reader.header = csv_header(path, encoding)
        yield from reader.records(stop=span.stop)
    span.reached = reader.stopped


def csv_header(path: Path, encoding: str) -> list[str] | None:
    """The header `read_csv` takes from the file (its first whole record), read from the
    file's start as `read_csv` reads it; None when the file has none."""
    reader = _CsvRecords(path, encoding, None)
    with contextlib.closing(reader):
        for _ in reader.records(header_only=True):
            pass
    return reader.header


class _CsvRecords:
    """The reading of `read_csv`. Between two records its state is the header, the broken
    record being recovered (if any) and the lines to read again (the lines that follow)."""

    def __init__(self, path: Path, encoding: str, fields: list[str] | None,
                 span: Span | None = None):
        self.name = str(path)
        self.source = _Lines(path, encoding, span)
        self.again: deque[tuple[int, str, str | None]] = deque()
        self.header = list(fields) if fields is not None else None
        self.broken: list | None = None  # [position, raw parts, bytes, error, lines absorbed]
        self.stopped: int | None = None  # the line where `records(stop)` stopped

    def close(self) -> None:
        self.source.close()

    def next_line(self):
        return self.again.popleft() if self.again else self.source.next()

    def record(self, first, max_bytes: int, max_lines: int | None):
        """(lines, row, complete, overflow): a record from line `first` on; overflow is
        None, or (lines, bytes) of a quoted field that went past `max_bytes` and closed."""
        lines, size = [first], len(first[1])
        quotes = first[1].count('"')
        row, complete, strict = _csv_fields(first[1])
        while not complete and size < max_bytes and (max_lines is None or
                                                     len(lines) < max_lines):
            nxt = self.next_line()
            if nxt is None:
                return lines, row, False, None
            lines.append(nxt)
            size += len(nxt[1])
            quotes += nxt[1].count('"')
            n = len(lines)
            if quotes % 2 == 0 or n & (n - 1) == 0:  # (parse again when it may be whole)
                row, complete, strict = _csv_fields("".join(t for _, t, _ in lines))
        if complete or max_lines is not None:
            if max_lines is not None and complete and (
                    not strict or _stray_quote("".join(t for _, t, _ in lines))):
                complete = False  # recovering: only a clean record starts again
            return lines, row, complete, None
        # over the bound: count on (keeping nothing) to where the quote closes
        count, extra = len(lines), 0
        while quotes % 2:
            nxt = self.next_line()
            if nxt is None:  # it never closes: the first line alone is broken
                self.again.extend(lines[1:])
                self.source.restart(lines[-1][0] + 1)
                return lines[:1], row, False, None
            count, extra, quotes = count + 1, extra + len(nxt[1]), quotes + nxt[1].count('"')
        return lines, row, False, (count, size + extra)

    def flush_broken(self) -> RawRecord | None:
        if self.broken is None:
            return None
        position, parts, _, error, absorbed = self.broken
        self.broken = None
        if absorbed:
            error += f"; the {absorbed} line(s) after it do not form records either"
        return RawRecord(self.name, position, "".join(parts).rstrip("\r\n"), error=error)

    def absorb(self, lines, error: str) -> None:
        """A broken record: its first line joins (or starts) the current reject; the rest
        is read again."""
        self.again.extendleft(reversed(lines[1:]))
        text = lines[0][1]
        if self.broken is None:
            self.broken = [lines[0][0], [text], len(text), error, 0]
        elif self.broken[2] < CSV_RECORD_BYTES:
            self.broken[1].append(text)
            self.broken[2] += len(text)
            self.broken[4] += 1
        else:
            self.broken[4] += 1

    def holds_nothing(self) -> bool:
        """Whether reading on from the next line is reading a file from there: the header
        is known and no broken record is being recovered (between two records)."""
        return self.header is not None and self.broken is None

    def records(self, stop: int | None = None,
                header_only: bool = False) -> Iterator[RawRecord]:
        """The records, to the file's end, or to the first line at or after `stop` where
        the reader holds nothing (its number in `stopped`), or to the header."""
        name = self.name
        while (first := self.next_line()) is not None:
            if stop is not None and first[0] >= stop and self.holds_nothing():
                self.again.appendleft(first)
                self.stopped = first[0]
                return
            resync = self.broken is not None
            lines, row, complete, overflow = self.record(
                first, CSV_RESYNC_BYTES if resync else CSV_RECORD_BYTES,
                CSV_RESYNC_LINES if resync else None)
            if overflow is not None:
                if (rec := self.flush_broken()) is not None:
                    yield rec
                count, size = overflow
                yield RawRecord(name, first[0],
                                "".join(t for _, t, _ in lines).rstrip("\r\n"),
                                error=f"CSV error: a quoted field runs over {count} lines "
                                      f"({size} bytes), more than a record may hold "
                                      f"({CSV_RECORD_BYTES} bytes); the text is cut")
                continue
            if not complete:
                self.absorb(lines, "CSV error: a quoted field opened on this line does not "
                                   "close before the file ends" if not resync else
                            "CSV error: a line that does not start a clean record")
                continue
            if len(lines) == 1 and not any(cell.strip() for cell in row):
                continue  # a blank line
            raw_text = "".join(t for _, t, _ in lines).rstrip("\r\n")
            undecodable = next((err for _, _, err in lines if err), None)
            if self.header is None:  # (an undecodable header keeps its replacement
                self.header = [h.strip() for h in row]  # characters: the rows then miss
                if header_only:                          # fields and say so)
                    return
                continue
            if len(row) != len(self.header):
                self.absorb(lines, f"CSV row has {len(row)} fields, header has "
                                   f"{len(self.header)}")
                continue
            if (rec := self.flush_broken()) is not None:
                yield rec
            if undecodable:
                yield RawRecord(name, first[0], raw_text, error=undecodable)
                continue
            yield RawRecord(name, first[0], ",".join(row), dict(zip(self.header, row)))
        self.stopped = None
        if (rec := self.flush_broken()) is not None:
            yield rec


def read_text(path: Path) -> Iterator[RawRecord]:
    """The whole file as one document, each line decoded as `decode_line` decides (so a
    Latin-1 document reads as Latin text, and a UTF-8 one stays UTF-8); a file with a line
    that reads cleanly in no candidate encoding is one reject."""
    encoding = detect_encoding(path)
    with _open(path) as f:
        data = f.read()
    name = str(path)
    parts, error = [], None
    for lineno, line in enumerate(data.splitlines(keepends=True), 1):
        text, why = decode_line(line, encoding)
        parts.append(text)
        if why and error is None:
            error = f"line {lineno}: {why}"
    text = "".join(parts)
    if error:
        yield RawRecord(name, 1, text, error=error)
        return
    title = Path(name[:-3] if name.endswith(".gz") else name).stem
    yield RawRecord(name, 1, text, {"title": title, "text": text})


def _dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)
