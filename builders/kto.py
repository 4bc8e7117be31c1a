"""kto: unpaired `prompt`, `completion` and boolean `label`, for KTOTrainer.

Built from preference pairs (chosen -> label true, rejected -> label false): either built
in the same run from the recipe's sources (the preference steps pair, bound and split the
pairs, then `Unpair`), or read from an existing preference version (`from_ref`, whose
splits are kept). KTOTrainer does not shuffle and needs both labels in a batch, so rows are
put in a seeded order and desirable and undesirable rows are interleaved.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from meddata.length import joined
from meddata.schema import MESSAGES
from meddata.steps import DUCKDB_MEMORY, Books, Source, Step, seeded_array
from meddata.steps.length import Length
from meddata.steps.split import Split
from meddata.validation import suites

from . import preference
from .common import SHAREGPT_TAGS, schema, split_system, with_system
from .registry import Kind

SCHEMA = schema(("prompt", MESSAGES), ("completion", MESSAGES), ("label", pa.bool_()),
                ("rejected_by", pa.string()))
ORDER = "_order"


class Unpair(Step):
    """Each pair -> a desirable and an undesirable row, in the order KTOTrainer needs: the
    desirable rows sorted by a seeded hash of their ids, the undesirable ones likewise,
    interleaved. The rows go to a Parquet spill with their sort key; DuckDB sorts it (out
    of core past its memory limit) and the result streams back in batches."""

    name = "unpair"
    stats_key = "kto"
    needs = ("id", "source", "lang", "task", "split", "prompt", "chosen", "rejected",
             "rejected_by")
    adds = tuple(SCHEMA.names)

    def __init__(self, seed: int):
        self.seed = seed
        self.desirable = self.undesirable = 0

    def run(self, source: Source, books: Books) -> Iterator[pa.RecordBatch]:
        import duckdb
        import pyarrow.parquet as pq

        books.count_out = False  # rows out are counted in pairs, like rows in
        spill = source.spill_dir / f"unpair-{id(self)}.parquet"
        writer = None
        for batch in source.batches():
            self.check_columns(batch)
            n = batch.num_rows
            lineage = {c: batch.column(c) for c in ("source", "lang", "task", "split")}
            good_ids = pc.binary_join_element_wise(batch.column("id"), "#chosen", "")
            bad_ids = pc.binary_join_element_wise(batch.column("id"), "#rejected", "")
            parts = []
            for ids, completion, label, by in (
                    (good_ids, batch.column("chosen"), True, pa.nulls(n, pa.string())),
                    (bad_ids, batch.column("rejected"), False, batch.column("rejected_by"))):
                parts.append(pa.table({
                    "id": ids, **lineage, "prompt": batch.column("prompt"),
                    "completion": completion, "label": pa.array([label] * n, pa.bool_()),
                    "rejected_by": by,
                    "_h": pa.array(seeded_array(self.seed, "kto", ids.to_pylist()),
                                   pa.uint64())}))
            table = pa.concat_tables(parts)
            if writer is None:
                writer = pq.ParquetWriter(spill, table.schema)
            writer.write_table(table)
            books.rows_out += n
            books.info["kto_rows"] = books.info.get("kto_rows", 0) + 2 * n
            self.desirable += n
            self.undesirable += n
        if writer is None:
            return
        writer.close()
        con = duckdb.connect()
        con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
        con.execute("SET temp_directory = ?", [str(source.spill_dir)])
        path = str(spill).replace("'", "''")
        reader = con.sql(f"""
            SELECT * EXCLUDE (_h, _rank) FROM (
                SELECT *, row_number() OVER (PARTITION BY label ORDER BY _h, id) AS _rank
                FROM read_parquet('{path}'))
            ORDER BY _rank, label DESC""").to_arrow_reader(8192)
        for batch in reader:
            yield pa.RecordBatch.from_arrays(
                [batch.column(c).cast(SCHEMA.field(c).type) for c in SCHEMA.names],
                schema=SCHEMA)

    def report(self) -> dict[str, Any]:
        total = self.desirable + self.undesirable
        return {"desirable": self.desirable, "undesirable": self.undesirable,
                "desirable_ratio": round(self.desirable / total, 4) if total else None}


def steps(recipe, ctx) -> list:
    if recipe.from_ref:  # an existing preference version: its splits are kept
        return [Length(preference.KIND, ctx.measure, recipe.max_tokens), Unpair(recipe.seed)]
    return [*preference.steps(recipe, ctx)[:-1], Split(recipe.validation_ratio, recipe.seed),
            Unpair(recipe.seed)]


def length(batch, measure):
    return measure.conversations(joined(pl.from_arrow(batch.column("prompt")),
                                        pl.from_arrow(batch.column("completion"))))


def rules(bounds) -> list:
    return [*suites.conversation("prompt", "prompt", suites.PROMPT_PATTERN),
            *suites.lang(suites.messages_text("prompt", ("user", "assistant"))),
            *suites.conversation("completion", "completion", r"^assistant$"),
            suites.Rule("label_is_boolean", "ExpectColumnValuesToBeInSet",
                        {"column": "label", "value_set": [True, False]},
                        {"label": pl.col("label")}),
            suites.Rule("label_has_both_values", "ExpectColumnDistinctValuesToEqualSet",
                        {"column": "label", "value_set": [True, False]}, {},
                        "both labels occur (over all rows)", scope="distinct"),
            suites.length("text_length", ["prompt", "completion"], bounds)]


def llamafactory_record(r: dict[str, Any], layout: str) -> dict[str, Any]:
    system, prompt = split_system(r["prompt"])
    return with_system({"messages": prompt + r["completion"], "label": bool(r["label"])},
                       system)


def llamafactory_entry(file_name: str, layout: str, has_system: bool) -> dict[str, Any]:
    cols = {"messages": "messages", "kto_tag": "label"}
    return {"file_name": file_name, "formatting": "sharegpt",
            "columns": {**cols, **({"system": "system"} if has_system else {})},
            "tags": SHAREGPT_TAGS}


KIND = Kind(name="kto", description=__doc__.splitlines()[0], schema=SCHEMA, steps=steps,
            length=length, rules=rules, llamafactory_record=llamafactory_record,
            llamafactory_entry=llamafactory_entry, trains=("kto",),
            from_kinds=("preference",))
