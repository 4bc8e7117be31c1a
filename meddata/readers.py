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


def _open(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def sniff_json(path: Path) -> str:
    """`jsonl`, `array` or `object` for a .json file, from its first bytes."""
    with _open(path) as f:
        head = f.read(1 << 16)
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if text.startswith("["):
        return "array"
    first_line, _, rest = text.partition("\n")
    try:
        first = json.loads(first_line)
    except ValueError:
        return "object"  # a pretty-printed object (or a broken file: ijson will say where)
    if rest.strip():
        return "jsonl"  # a whole object on the first line and more lines: one record per line
    # a single line: an object of objects is keyed by id, anything else is one record
    if isinstance(first, dict) and first and all(isinstance(v, dict) for v in first.values()):
        return "object"
    return "jsonl"


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


def jsonl_record(file: str, lineno: int, line: bytes) -> RawRecord | None:
    """One JSON Lines line as a RawRecord (None for a blank line)."""
    if not line.strip():
        return None
    try:
        text = line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        return RawRecord(file, lineno, line.decode("utf-8", errors="replace"),
                         error=f"not UTF-8: {e}")
    try:
        return RawRecord(file, lineno, text, json.loads(text))
    except ValueError as e:
        return RawRecord(file, lineno, text, error=f"invalid JSON: {e}")


def read_jsonl(path: Path) -> Iterator[RawRecord]:
    name = str(path)
    with _open(path) as f:
        for lineno, line in enumerate(f, 1):
            rec = jsonl_record(name, lineno, line)
            if rec is not None:
                yield rec


def read_json(path: Path, layout: str) -> Iterator[RawRecord]:
    """Stream a JSON array (items) or a JSON object keyed by id (key, value pairs)."""
    import ijson

    name = str(path)
    position = 0
    with _open(path) as f:
        try:
            if layout == "array":
                for position, item in enumerate(ijson.items(f, "item", use_float=True), 1):
                    yield RawRecord(name, position, _dump(item), item)
            else:
                for position, (key, item) in enumerate(ijson.kvitems(f, "", use_float=True), 1):
                    yield RawRecord(name, position, _dump({key: item}), item, key=key)
        except ijson.JSONError as e:
            # The rest of the file cannot be parsed: keep what is left as one quarantined record.
            yield RawRecord(name, position + 1, f"<unparseable from record {position + 1}>",
                            error=f"invalid JSON after record {position}: {e}")


def read_parquet(path: Path) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    name = str(path)
    position = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            position += 1
            yield RawRecord(name, position, _dump(row), row)


def detect_encoding(path: Path) -> str:
    """utf-8 when the file decodes as UTF-8, else gb18030 (Chinese CSV releases)."""
    with _open(path) as f:
        data = f.read(1 << 20)
    for enc in ("utf-8-sig", "gb18030"):
        try:
            data.decode(enc)
            return enc
        except UnicodeDecodeError as e:
            if enc == "utf-8-sig" and e.start >= len(data) - 4:
                return enc  # a multi-byte character cut by the sample boundary
    return "gb18030"


def read_csv(path: Path) -> Iterator[RawRecord]:
    name = str(path)
    encoding = detect_encoding(path)
    with _open(path) as raw:
        text = io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline="")
        reader = csv.reader(text)
        try:
            header = next(reader)
        except StopIteration:
            return
        header = [h.strip() for h in header]
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                yield RawRecord(name, start, "", error=f"CSV error: {e}")
                continue
            if not any(cell.strip() for cell in row):
                continue
            raw_text = ",".join(row)
            if len(row) != len(header):
                yield RawRecord(name, start, raw_text,
                                error=f"CSV row has {len(row)} fields, header has {len(header)}")
                continue
            yield RawRecord(name, start, raw_text, dict(zip(header, row)))


def read_text(path: Path) -> Iterator[RawRecord]:
    with _open(path) as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("gb18030", errors="replace")
    name = str(path)
    title = Path(name[:-3] if name.endswith(".gz") else name).stem
    yield RawRecord(name, 1, text, {"title": title, "text": text})


def _dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)
