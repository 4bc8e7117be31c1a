"""pretrain: plain `text` for continued pretraining; with a tokenizer and `pack: true`,
packed `input_ids` too (fixed-length sequences for TRL's SFTTrainer or a plain LM loop).

Documents become their title and body; QA, instruction and reasoning rows become the
rendered prompt followed by the reference answer. Packing joins the documents of each read unit
(a run of the input's row groups, meddata/engines/units.py), split and language with the
tokenizer's EOS and cuts them into sequences of exactly `max_tokens` ids (the last one of
each may be shorter), as a stream, in the workers: only the ids left over from the last cut
are held per split and language. A sequence row carries its `input_ids` (no decoded
`text`: TRL's SFTTrainer takes a dataset with `input_ids` as already tokenized and never
reads `text`, and decoding every window cost more than tokenizing it), and its source and
task list every contributing document's. Token ids are cached in the store
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
PACKED_SCHEMA = schema(("input_ids", pa.list_(pa.int32())))


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
    """One split and language of a read unit: the ids left over from the last cut (with
    the documents they belong to); `feed` gives the sequences it could cut."""

    def __init__(self, key: tuple[str, str], unit: int, max_len: int):
        self.key, self.unit, self.max_len = key, unit, max_len
        self.rest = np.empty(0, np.int32)
        self.rest_lengths = np.empty(0, np.int64)  # the documents (or their tails) in the rest
        self.rest_meta: list[tuple[str, str, str]] = []
        self.count = 0

    def feed(self, flat: np.ndarray, lengths: np.ndarray, meta: list[tuple[str, str, str]],
             final: bool = False) -> pa.RecordBatch | None:
        """`flat`: documents' ids one after another (each ending in EOS), `lengths` theirs."""
        flat = np.concatenate([self.rest, flat])
        lengths = np.concatenate([self.rest_lengths, lengths])
        owners = self.rest_meta + meta
        if not len(flat):
            return None
        ends = np.cumsum(lengths)
        starts = ends - lengths
        L = self.max_len
        full = len(flat) // L
        cuts = full + (1 if final and len(flat) % L else 0)
        out = None
        if cuts:
            los = np.arange(cuts, dtype=np.int64) * L
            his = np.minimum(los + L, len(flat))
            firsts = np.searchsorted(ends, los, side="right")
            lasts = np.searchsorted(starts, his, side="left") - 1
            out = self._sequences(flat[:his[-1]], his - los,
                                  [owners[f:e + 1] for f, e in zip(firsts.tolist(),
                                                                   lasts.tolist())])
        cut = len(flat) if final else full * L
        after = ends > cut  # documents with ids after the cut
        self.rest = flat[cut:]
        self.rest_lengths = np.minimum(lengths[after], ends[after] - cut)
        self.rest_meta = [owners[i] for i in np.flatnonzero(after).tolist()]
        return out

    def _sequences(self, values: np.ndarray, lengths: np.ndarray,
                   members: list[list[tuple]]) -> pa.RecordBatch:
        split, lang = self.key
        n0 = self.count
        self.count += len(lengths)
        offsets = np.zeros(len(lengths) + 1, np.int32)
        np.cumsum(lengths, out=offsets[1:])
        return pa.RecordBatch.from_pydict({
            "id": [f"{split}/{lang}/pack/{self.unit:05d}-{n0 + i:06d}"
                   for i in range(len(lengths))],
            "source": ["+".join(sorted({m[0] for m in ms})) for ms in members],
            "lang": ["+".join(sorted({m[1] for m in ms})) for ms in members],
            "task": ["+".join(sorted({m[2] for m in ms})) for ms in members],
            "split": [split] * len(lengths),
            "input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)),
        }, schema=PACKED_SCHEMA)


class Pack(Step):
    """Documents -> sequences of `max_len` token ids, per read unit, split and language.

    Packing runs in the workers, a read unit at a time (meddata/engines/units.py): the
    unit's documents are joined per split and language and cut as they come, and the last,
    shorter sequence of each closes the unit. Units are cut from the inputs alone, so every
    engine packs the same sequences; a sequence's id names its unit and its number there
    (`train/en/pack/00003-000017`)."""

    name = "pack"
    needs = ("id", "source", "lang", "task", "split", IDS)
    adds = ("input_ids",)
    parallel = True

    worker_state = ("eos",)

    def __init__(self, measure, max_len: int):
        if not measure.has_tokenizer:
            raise ValueError("packing needs a tokenizer")
        self.measure, self.max_len = measure, max_len
        self.sequences = self.tokens = 0

    def setup(self) -> None:
        self.eos = self.measure.tok.eos_token_id  # (the tokenizer loads in each worker)
        if self.eos is None:
            raise ValueError(f"packing needs a tokenizer with an EOS token; "
                             f"{self.measure.path} has none")

    def map_unit(self, batches: Iterator[pa.RecordBatch], books: Books,
                 unit: int) -> Iterator[pa.RecordBatch]:
        books.count_out = False
        packers: dict[tuple[str, str], _Packer] = {}
        for batch in batches:
            books.rows_out += batch.num_rows  # every document goes into a sequence
            ids = batch.column(IDS)
            offsets = ids.offsets.to_numpy().astype(np.int64)
            values = ids.values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
            keys = list(zip(batch.column("split").to_pylist(), batch.column("lang").to_pylist()))
            meta = list(zip(batch.column("source").to_pylist(), batch.column("lang").to_pylist(),
                            batch.column("task").to_pylist()))
            groups: dict[tuple[str, str], list[int]] = {}
            for i, key in enumerate(keys):
                groups.setdefault(key, []).append(i)
            for key, rows in groups.items():
                packer = packers.setdefault(key, _Packer(key, unit, self.max_len))
                # the group's documents one after another, each followed by EOS (no Python
                # object per document: positions in the output map back into `values`)
                at = np.asarray(rows)
                starts = offsets[at]
                lengths = offsets[at + 1] - starts + 1
                ends = np.cumsum(lengths)
                source_at = np.arange(int(ends[-1])) + np.repeat(starts - (ends - lengths),
                                                                  lengths)
                flat = values[np.minimum(source_at, max(len(values) - 1, 0))] if len(values) \
                    else np.zeros(len(source_at), np.int32)
                flat[ends - 1] = self.eos
                self.tokens += int(ends[-1])
                yield packer.feed(flat, lengths, [meta[i] for i in rows])
        for key in sorted(packers):
            yield packers[key].feed(np.empty(0, np.int32), np.empty(0, np.int64), [],
                                    final=True)
        self.sequences += sum(p.count for p in packers.values())

    def run(self, source: Source, books: Books) -> Iterator[pa.RecordBatch]:
        """Packing on the driver (after a step that cannot run in the workers): the whole
        stream as one unit."""
        self.ready()
        for out in self.map_unit(source.batches(), books, 0):
            if out is not None and out.num_rows:
                yield out
        self.close(books)

    def take_state(self) -> tuple[int, int]:
        state, self.sequences, self.tokens = (self.sequences, self.tokens), 0, 0
        return state

    def merge_state(self, state: tuple[int, int]) -> None:
        self.sequences += state[0]
        self.tokens += state[1]

    def close(self, books: Books) -> None:
        books.info.update(sequences=self.sequences, tokens=self.tokens, max_len=self.max_len)


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
    if "text" not in bounds.columns and "input_ids" in bounds.columns:  # packed sequences
        return [suites.Rule("sequence_length", "ExpectColumnValuesToBeBetween",
                            {"column": "sequence_tokens", "min_value": 1,
                             "max_value": bounds.max_tokens},
                            {"sequence_tokens": pl.col("input_ids").list.len()},
                            f"token ids per sequence within [1, {bounds.max_tokens}]"),
                *suites.lang(pl.col("lang"))[:1]]  # lang_known (the script check reads text)
    return [suites.length("text_length", ["text"], bounds), *suites.lang(pl.col("text"))]


def llamafactory_record(r: dict[str, Any], layout: str) -> dict[str, Any]:
    if "text" not in r:
        raise ValueError(PACKED_EXPORT)
    return {"text": r["text"]}


PACKED_EXPORT = ("a packed pretrain version carries input_ids, not text: LLaMA-Factory's pt "
                 "stage reads `text` and tokenizes and packs it itself, so export the version "
                 "built without --pack")


def llamafactory_entry(file_name: str, layout: str, has_system: bool) -> dict[str, Any]:
    return {"file_name": file_name, "columns": {"prompt": "text"}}


KIND = Kind(name="pretrain", description=__doc__.splitlines()[0], schema=SCHEMA, steps=steps,
            length=length, rules=rules, llamafactory_record=llamafactory_record,
            llamafactory_entry=llamafactory_entry,
            schema_for=lambda recipe: PACKED_SCHEMA if recipe.pack else SCHEMA)
