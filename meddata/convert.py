"""Run a converter over raw files (or a hub dataset) and publish `canonical/<name>`.

A converter turns one raw record into one canonical row or raises `Reject`. This module owns
everything around that: reading, ids, lineage hashes, required-field checks, batching into
Arrow, quarantining rejects with file, position, raw text and reason, row conservation, the
reject-rate limit, and publishing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from meddata.readers import RawRecord, list_files, read_file
from meddata.schema import CANONICAL, LANGS, TASKS
from meddata.store import Store, Version, sha256_file
from meddata.text import clean, detect_lang

BATCH_ROWS = 5_000
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
    #: options a converter accepts beyond subset and split: name -> help text
    options: dict[str, str] = {}

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

    def report(self) -> dict[str, Any]:
        """Facts about the conversion for the manifest (for example labels left unjoined)."""
        return {}

    def row(self, rec: RawRecord) -> dict[str, Any]:
        """One canonical row (a dict of canonical columns, plus `source_id`), or raise Reject."""
        raise NotImplementedError

    # shared -------------------------------------------------------------------------------
    def subset_for(self, file: str) -> str:
        return self.subset or self.infer_subset(file) or self.default_subset

    def split_for(self, rec: RawRecord) -> str:
        if self.split:
            return self.split
        if rec.split:
            return rec.split
        stem = Path(rec.file).name.lower()
        for word in re.split(r"[^a-z]+", stem):
            if word in SPLIT_WORDS:
                return word
        return "train"

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "subset": self.subset, "split": self.split, **self.opts}


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
    if out["task"] in ("instruction", "reasoning", "open_qa") and not out["response"]:
        raise Reject("missing_field:response", "empty response")
    return out


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


def run(conv: Converter, inputs: list[str], store: Store, name: str | None = None,
        max_reject_rate: float = 0.05, hub_config: str | None = None,
        progress: bool = True) -> ConversionResult:
    """Convert `inputs` (files, folders, or one hub id) and publish canonical/<name>."""
    from tqdm.auto import tqdm

    name = name or conv.source
    local = [p for p in inputs if Path(p).exists()]
    if len(local) == len(inputs):
        files = list_files(inputs)
        input_info = [{"path": str(f), "bytes": f.stat().st_size, "sha256": sha256_file(f)}
                      for f in files]
        files = conv.prepare(files)
        stream = (rec for f in files for rec in read_file(f))
    elif len(inputs) == 1 and _HUB_ID.match(inputs[0]):
        stream = hub_records(inputs[0], hub_config, conv.split)
        input_info = [{"hub_id": inputs[0], "config": hub_config, "split": conv.split}]
    else:
        missing = [p for p in inputs if not Path(p).exists()]
        raise ConversionError(f"no such file or folder: {', '.join(missing)} "
                              "(a hub id must be the only input)")

    rows_in = rows_out = 0
    seen: set[bytes] = set()
    rejects: Counter[str] = Counter()
    batch: list[dict[str, Any]] = []
    pending_rejects: list[dict[str, Any]] = []
    with store.publisher("canonical", name, CANONICAL, inputs=input_info,
                         recipe={"convert": conv.describe()}) as pub:

        def quarantine(rec: RawRecord, reason: str, detail: str) -> None:
            rejects[reason] += 1
            pending_rejects.append({"stage": "convert", "source": conv.source, "file": rec.file,
                                    "position": rec.position, "raw": rec.raw,
                                    "reason": reason, "detail": detail})

        bar = tqdm(stream, desc=f"convert {conv.source}", unit=" rec", disable=not progress,
                   mininterval=0.5)
        for rec in bar:
            rows_in += 1
            if rec.error:
                quarantine(rec, "unparseable", rec.error)
            else:
                try:
                    row = _finish(conv.row(rec), conv, rec)
                except Reject as e:
                    quarantine(rec, e.reason, e.detail)
                else:
                    digest = hashlib.blake2b(row["id"].encode(), digest_size=8).digest()
                    if digest in seen and row["id"].endswith(row["raw_sha1"][:16]):
                        quarantine(rec, "duplicate_record",
                                   "an identical record was already converted")
                    elif digest in seen:
                        quarantine(rec, "duplicate_id", f"id {row['id']} was already converted")
                    else:
                        seen.add(digest)
                        batch.append(row)
                        rows_out += 1
            if len(batch) >= BATCH_ROWS:
                pub.write(pa.RecordBatch.from_pylist(batch, schema=CANONICAL))
                batch = []
            if len(pending_rejects) >= BATCH_ROWS:
                pub.reject(pending_rejects)
                pending_rejects = []
        if batch:
            pub.write(pa.RecordBatch.from_pylist(batch, schema=CANONICAL))
        pub.reject(pending_rejects)
        n_rejects = sum(rejects.values())
        if rows_in == 0:
            raise ConversionError(f"{conv.source}: the input holds no records")
        rate = n_rejects / rows_in
        if rate > max_reject_rate:
            reason, count = rejects.most_common(1)[0]
            raise ConversionError(
                f"{conv.source}: {n_rejects} of {rows_in} records rejected ({rate:.1%} > limit "
                f"{max_reject_rate:.1%}); commonest reason: {reason} ({count}); nothing published")
        pub.extra["convert_report"] = conv.report()
        pub.add_stage("convert", rows_in, rows_out, dict(rejects))
    return ConversionResult(pub.version, rows_in, rows_out, rejects)
