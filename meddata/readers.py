"""Streaming readers for raw source files.

Each reader yields `RawRecord`s: the parsed record (or None when it could not be parsed),
the file, a 1-based position (line number for line formats, record index otherwise) and the
raw text. A record that cannot be parsed is yielded with `error` set, so the caller can
quarantine it: nothing is lost and nothing stops the stream.

Formats: JSON Lines (`.jsonl`, `.ndjson`, and `.json` files that hold one object per line),
a JSON array, a JSON object keyed by id (streamed with ijson), Parquet, CSV (UTF-8, or
GB18030 where the file is not UTF-8), plain text (one document per file), and any of these
compressed with gzip (`.gz`). A folder is read file by file in sorted order.
"""

from __future__ import annotations

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


def _open(path: Path) -> BinaryIO:
    """The file's bytes (gunzipped for .gz), after a UTF-8 byte order mark if it has one:
    a BOM is not data."""
    f = gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")
    if f.read(3) != BOM:
        f.seek(0)
    return f


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


def read_file(path: Path) -> Iterator[RawRecord]:
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


def read_jsonl(path: Path) -> Iterator[RawRecord]:
    name = str(path)
    with _open(path) as f:
        for lineno, line in enumerate(f, 1):
            rec = jsonl_record(name, lineno, line)
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


def read_parquet(path: Path) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    name = str(path)
    position = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            position += 1
            yield RawRecord(name, position, _dump(row), row)


ENCODING_SAMPLE_BYTES = 4 << 20
CSV_RECORD_LINES = 1_000     # a quoted field may run over at most this many lines
CSV_RECORD_BYTES = 1 << 20   # ... and this many bytes; past that its first line is broken


def detect_encoding(path: Path) -> str:
    """The encoding of a text file, decided by its lines, so that a stray byte cannot flip a
    file: `utf-8` unless most of the non-ASCII lines in the first 4 MB fail to decode as
    UTF-8, then `gb18030` (Chinese CSV releases). Lines that do not decode in the chosen
    encoding are rejected one by one; nothing is replaced silently."""
    with _open(path) as f:
        data = f.read(ENCODING_SAMPLE_BYTES)
        if f.read(1):
            data = data[:data.rfind(b"\n") + 1] or data  # whole lines only
    good = bad = 0
    for line in data.split(b"\n"):
        if line.isascii():
            continue
        try:
            line.decode("utf-8")
            good += 1
        except UnicodeDecodeError as e:
            if e.start >= len(line) - 3 and len(data) >= ENCODING_SAMPLE_BYTES - 3:
                continue  # a character cut by the sample boundary
            bad += 1
    return "utf-8" if good >= bad else "gb18030"


def _text_lines(path: Path, encoding: str) -> Iterator[tuple[int, str, str | None]]:
    """(line number, text, None or why the line does not decode) for each physical line;
    an undecodable line's text is decoded with replacement characters, for the reject."""
    with _open(path) as f:
        for lineno, line in enumerate(f, 1):
            try:
                yield lineno, line.decode(encoding), None
            except UnicodeDecodeError as e:
                yield lineno, line.decode(encoding, errors="replace"), f"not {encoding}: {e}"


def _csv_fields(text: str) -> tuple[list[str] | None, bool]:
    """(fields, complete): complete is False while `text` ends inside a quoted field."""
    try:
        rows = list(csv.reader(io.StringIO(text), strict=True))
    except csv.Error as e:
        if "unexpected end of data" in str(e):
            return None, False
        rows = list(csv.reader(io.StringIO(text)))  # lenient, as CSV readers are
    return (rows[0] if rows else []), True


def read_csv(path: Path, fields: list[str] | None = None) -> Iterator[RawRecord]:
    """CSV records as dicts keyed by the header row (or by `fields`, for files without a
    header). A quoted field may span lines, up to CSV_RECORD_LINES lines and
    CSV_RECORD_BYTES bytes; a quote that never closes within that bound, or a record whose
    field count is wrong, costs only its first line: the following lines are read again as
    records of their own. A record that does not decode is a reject with its text."""
    import sys

    csv.field_size_limit(min(sys.maxsize, (1 << 31) - 1))
    name = str(path)
    encoding = detect_encoding(path)
    source = _text_lines(path, encoding)
    again: deque[tuple[int, str, str | None]] = deque()
    header = list(fields) if fields is not None else None

    def next_line():
        return again.popleft() if again else next(source, None)

    def broken(lines, error: str) -> RawRecord:
        """The first line alone is rejected; the rest is read again."""
        again.extendleft(reversed(lines[1:]))
        return RawRecord(name, lines[0][0], lines[0][1].rstrip("\r\n"), error=error)

    while (first := next_line()) is not None:
        lines, size = [first], len(first[1])
        row, complete = _csv_fields(first[1])
        while not complete and len(lines) < CSV_RECORD_LINES and size < CSV_RECORD_BYTES:
            nxt = next_line()
            if nxt is None:
                break
            lines.append(nxt)
            size += len(nxt[1])
            row, complete = _csv_fields("".join(t for _, t, _ in lines))
        raw_text = "".join(t for _, t, _ in lines).rstrip("\r\n")
        if not complete:
            yield broken(lines, "CSV error: a quoted field does not close within "
                         f"{len(lines)} lines")
            continue
        if len(lines) == 1 and not any(cell.strip() for cell in row):
            continue  # a blank line
        undecodable = next((err for _, _, err in lines if err), None)
        if header is None:  # (an undecodable header keeps its replacement characters: the
            header = [h.strip() for h in row]  # rows then miss fields and say so)
            continue
        if len(row) != len(header):
            error = f"CSV row has {len(row)} fields, header has {len(header)}"
            yield broken(lines, error) if len(lines) > 1 else RawRecord(
                name, first[0], raw_text, error=error)
            continue
        if undecodable:
            yield RawRecord(name, first[0], raw_text, error=undecodable)
            continue
        yield RawRecord(name, first[0], ",".join(row), dict(zip(header, row)))


def read_text(path: Path) -> Iterator[RawRecord]:
    """The whole file as one document, in the encoding `detect_encoding` decides; a file
    that does not decode in it is one reject."""
    encoding = detect_encoding(path)
    with _open(path) as f:
        data = f.read()
    name = str(path)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        yield RawRecord(name, 1, data.decode(encoding, errors="replace"),
                        error=f"not {encoding}: {e}")
        return
    title = Path(name[:-3] if name.endswith(".gz") else name).stem
    yield RawRecord(name, 1, text, {"title": title, "text": text})


def _dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)
