"""pretrain: plain `text` for continued pretraining; with a tokenizer and `pack: true`,
packed `input_ids` too (fixed-length sequences for TRL's SFTTrainer or a plain LM loop).

Documents become their title and body; QA, instruction and reasoning rows become the
rendered prompt followed by the reference answer. Packing joins each split and language's
documents with the tokenizer's EOS and cuts them into sequences of exactly `max_tokens` ids
(the last one may be shorter), as a stream: only the ids left over from the last cut are
held per split and language, finished sequences go to a spill file, and the sequences come
out split by split, language by language. Each sequence row carries its decoded text, and
its source and task list every contributing document's. Token ids are cached in the store
(meddata.length), so a rebuild that changes only the packing or the split does not
tokenize again.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from meddata.steps import Books, Source, Step
from meddata.steps.length import IDS, Length
from meddata.steps.render import Render
from meddata.steps.split import Split
from meddata.validation import suites

from . import render
from .common import LINEAGE_NAMES, lineage, schema
from .registry import Kind

SCHEMA = schema(("text", pa.string()))
PACKED_SCHEMA = schema(("text", pa.string()), ("input_ids", pa.list_(pa.int32())))


def document_text(row: dict[str, Any], recipe) -> str | None:
    if row["task"] == "document":
        title, body = row.get("question"), row.get("context")
        return f"{title}\n\n{body}" if title and body else body
    if row.get("turns"):  # a dialogue: every turn
        return "\n\n".join(t["content"] for t in row["turns"] if t["role"] != "system")
    answer = render.chosen_text(row, recipe.reasoning)
    if not answer:
        return None
    return f"{render.prompt_text(row, recipe.prompt_style)}\n\n{answer}"


def row(recipe, r: dict[str, Any]) -> dict[str, Any] | str:
    text = document_text(r, recipe)
    return {**lineage(r), "text": text} if text else "no_answer"


class Texts(Render):
    """Canonical rows -> `text`: batches of documents (a corpus) in one polars expression,
    anything else row by row (`document_text`)."""

    def __init__(self, recipe):
        super().__init__("pretrain", partial(row, recipe), SCHEMA)

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch | None:
        if not pc.all(pc.equal(batch.column("task"), "document")).as_py():
            return super().map(batch, books)
        title, body = pl.col("question"), pl.col("context")
        both = (title.fill_null("") != "") & (body.fill_null("") != "")
        out = pl.from_arrow(batch).select(
            *LINEAGE_NAMES, text=pl.when(both).then(pl.concat_str(
                [title, pl.lit("\n\n"), body])).otherwise(body))
        empty = (out["text"].fill_null("") == "").to_numpy()
        if empty.any():
            books.drop("no_answer", rows=batch.filter(pa.array(empty)))
            out = out.filter(pl.Series(~empty))
        return pa.RecordBatch.from_arrays(
            [out[c].to_arrow().cast(SCHEMA.field(c).type) for c in SCHEMA.names],
            schema=SCHEMA) if out.height else None


class _Packer:
    """One split and language: the ids left over from the last cut, and a spill file of
    finished sequences."""

    def __init__(self, key: tuple[str, str], path, measure, max_len: int):
        self.key, self.path, self.measure, self.max_len = key, path, measure, max_len
        self.rest = np.empty(0, np.int32)
        self.rest_meta: tuple[str, str, str] | None = None  # the document the rest is from
        self.count = 0
        self.writer = None

    def feed(self, ids: list[np.ndarray], meta: list[tuple[str, str, str]],
             final: bool = False) -> None:
        pieces = ([self.rest] if len(self.rest) else []) + ids
        owners = ([self.rest_meta] if len(self.rest) else []) + meta
        if not pieces:
            return
        flat = np.concatenate(pieces)
        ends = np.cumsum([len(p) for p in pieces])
        starts = ends - np.array([len(p) for p in pieces])
        L = self.max_len
        full = len(flat) // L
        cuts = full + (1 if final and len(flat) % L else 0)
        chunks, members = [], []
        for k in range(cuts):
            lo, hi = k * L, min((k + 1) * L, len(flat))
            first = int(np.searchsorted(ends, lo, side="right"))
            last = int(np.searchsorted(starts, hi, side="left")) - 1
            chunks.append(flat[lo:hi])
            members.append(owners[first:last + 1])
        self.rest = flat[full * L:] if not final else np.empty(0, np.int32)
        self.rest_meta = owners[-1] if len(self.rest) else None
        if chunks:
            self._write(chunks, members)

    def _write(self, chunks: list[np.ndarray], members: list[list[tuple]]) -> None:
        split, lang = self.key
        texts = self.measure.decode([c.tolist() for c in chunks])
        n0 = self.count
        self.count += len(chunks)
        offsets = np.zeros(len(chunks) + 1, np.int32)
        np.cumsum([len(c) for c in chunks], out=offsets[1:])
        table = pa.table({
            "id": [f"{split}/{lang}/pack/{n0 + i:08d}" for i in range(len(chunks))],
            "source": ["+".join(sorted({m[0] for m in ms})) for ms in members],
            "lang": ["+".join(sorted({m[1] for m in ms})) for ms in members],
            "task": ["+".join(sorted({m[2] for m in ms})) for ms in members],
            "split": [split] * len(chunks),
            "text": texts,
            "input_ids": pa.ListArray.from_arrays(pa.array(offsets),
                                                  pa.array(np.concatenate(chunks))),
        }, schema=PACKED_SCHEMA)
        if self.writer is None:
            self.writer = pa.ipc.new_file(self.path, PACKED_SCHEMA)
        self.writer.write_table(table)

    def batches(self) -> Iterator[pa.RecordBatch]:
        if self.writer is None:
            return
        self.writer.close()
        with pa.OSFile(str(self.path)) as src:  # read, not mapped (flat RSS)
            reader = pa.ipc.open_file(src)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)


class Pack(Step):
    """Documents -> sequences of `max_len` token ids, per split and language."""

    name = "pack"
    needs = ("id", "source", "lang", "task", "split", IDS)
    adds = ("input_ids",)

    def __init__(self, measure, max_len: int):
        if measure.tok is None:
            raise ValueError("packing needs a tokenizer")
        if measure.tok.eos_token_id is None:
            raise ValueError("packing needs a tokenizer with an EOS token")
        self.measure, self.max_len = measure, max_len

    def run(self, source: Source, books: Books) -> Iterator[pa.RecordBatch]:
        eos = np.array([self.measure.tok.eos_token_id], np.int32)
        packers: dict[tuple[str, str], _Packer] = {}
        tokens = 0
        for batch in source.batches():
            self.check_columns(batch)
            ids = batch.column(IDS)
            offsets = ids.offsets.to_numpy()
            values = ids.values.to_numpy(zero_copy_only=False).astype(np.int32)
            keys = list(zip(batch.column("split").to_pylist(), batch.column("lang").to_pylist()))
            meta = list(zip(batch.column("source").to_pylist(), batch.column("lang").to_pylist(),
                            batch.column("task").to_pylist()))
            groups: dict[tuple[str, str], list[int]] = {}
            for i, key in enumerate(keys):
                groups.setdefault(key, []).append(i)
            for key, rows in groups.items():
                if key not in packers:
                    packers[key] = _Packer(key, source.spill_dir / f"pack-{id(self)}-"
                                           f"{len(packers)}.arrow", self.measure,
                                           self.max_len)
                docs = [np.concatenate([values[offsets[i]:offsets[i + 1]], eos]) for i in rows]
                tokens += sum(len(d) for d in docs)
                packers[key].feed(docs, [meta[i] for i in rows])
        for packer in packers.values():
            packer.feed([], [], final=True)
        books.info.update(sequences=sum(p.count for p in packers.values()), tokens=tokens,
                          max_len=self.max_len)
        books.count_out = False
        books.rows_out = books.rows_in  # every document went into a sequence
        langs = sorted({lang for _, lang in packers})
        for split in ("train", "validation"):
            for lang in langs:
                if (split, lang) in packers:
                    yield from packers[(split, lang)].batches()


def steps(recipe, ctx) -> list:
    out = [Texts(recipe),
           Length(KIND, ctx.measure, recipe.max_tokens, drop=not recipe.pack, ids=recipe.pack),
           Split(recipe.validation_ratio, recipe.seed)]
    if recipe.pack:
        out.append(Pack(ctx.measure, recipe.max_tokens))
    return out


def length(batch, measure):
    return measure.texts(pl.from_arrow(batch.column("text")))


def rules(bounds) -> list:
    return [suites.length("text_length", ["text"], bounds), *suites.lang(pl.col("text"))]


def llamafactory_record(r: dict[str, Any], layout: str) -> dict[str, Any]:
    return {"text": r["text"]}


def llamafactory_entry(file_name: str, layout: str, has_system: bool) -> dict[str, Any]:
    return {"file_name": file_name, "columns": {"prompt": "text"}}


KIND = Kind(name="pretrain", description=__doc__.splitlines()[0], schema=SCHEMA, steps=steps,
            length=length, rules=rules, llamafactory_record=llamafactory_record,
            llamafactory_entry=llamafactory_entry, trains=("cpt",),
            schema_for=lambda recipe: PACKED_SCHEMA if recipe.pack else SCHEMA)
