"""kto: unpaired `prompt`, `completion` and boolean `label`, for KTOTrainer.

Built from preference pairs (chosen -> label true, rejected -> label false): either built
in the same run from the recipe's sources (the preference steps pair, bound and split the
pairs, then `Unpair`), or read from an existing preference version (`from_ref`, whose
splits are kept). KTOTrainer does not shuffle and needs both labels in a batch, so rows are
put in a seeded order and desirable and undesirable rows are interleaved: the desirable
rows ordered by a seeded hash of their ids (`<pair id>#chosen`), the undesirable ones
likewise (`<pair id>#rejected`), output row 2q the desirable row of rank q and 2q + 1 the
undesirable row of rank q. Unpairing runs in the workers, as an exchange
(meddata/engines/units.py): the order does not depend on the engine or on how the input
was cut into read units.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from meddata.length import joined
from meddata.schema import MESSAGES
from meddata.steps import POSITION, Books, SpilledArray, Step, StepError, seeded_array
from meddata.steps.length import Length
from meddata.steps.split import Split
from meddata.validation import suites

from . import preference
from .common import LINEAGE_NAMES, SHAREGPT_TAGS, schema, split_system, with_system
from .registry import Kind

SCHEMA = schema(("prompt", MESSAGES), ("completion", MESSAGES), ("label", pa.bool_()),
                ("rejected_by", pa.string()))
UNPAIRED = SCHEMA.append(pa.field(POSITION, pa.int64()))  # Unpair's rows, with their places
ORDER, TIE = "kto", "kto-tie"  # the tags of the seeded hashes: the order, and its tiebreak
CHUNK_ROWS = 1 << 20  # hashes a plan looks through at a time for tied ones


def labelled_ids(ids: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """The ids of the pairs' desirable and undesirable rows: `<id>#chosen`, `<id>#rejected`."""
    return (pc.binary_join_element_wise(ids, "#chosen", ""),
            pc.binary_join_element_wise(ids, "#rejected", ""))


@dataclass(frozen=True)
class Ties:
    """One label's rows whose order hashes are equal (a 64-bit collision: rare): ranked
    among themselves by a second seeded hash of their ids. `hashes`: each hash that more
    than one row has, sorted; `seconds[starts[g]:starts[g + 1]]`: the second hashes of the
    rows with hash g, sorted."""

    hashes: np.ndarray
    starts: np.ndarray
    seconds: np.ndarray

    @classmethod
    def find(cls, ordered: np.ndarray, firsts: np.ndarray, seconds: np.ndarray) -> Ties:
        """The ties among `ordered` (the sorted order hashes), with the second hashes from
        `firsts` and `seconds` (both hashes of every row, in input order)."""
        tied = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
        if not len(tied):
            return NO_TIES
        found_firsts, found_seconds = [], []
        for lo in range(0, len(firsts), CHUNK_ROWS):
            chunk = np.asarray(firsts[lo:lo + CHUNK_ROWS])
            hit = np.isin(chunk, tied)
            found_firsts.append(chunk[hit])
            found_seconds.append(np.asarray(seconds[lo:lo + CHUNK_ROWS])[hit])
        f, s = np.concatenate(found_firsts), np.concatenate(found_seconds)
        order = np.lexsort((s, f))
        f, s = f[order], s[order]
        if ((f[1:] == f[:-1]) & (s[1:] == s[:-1])).any():
            raise StepError("kto unpairing needs unique pair ids, and two pairs share an id "
                            "(or, very rarely, both 64-bit hashes of their ids)")
        starts = np.append(np.searchsorted(f, tied), len(f)).astype(np.int64)
        return cls(tied, starts, s)

    def offsets(self, hashes: np.ndarray,
                seconds: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Each row's rank among the rows sharing its hash (0 where no other row has it);
        `seconds(rows)` gives the second hashes of the rows at those indexes."""
        out = np.zeros(len(hashes), np.int64)
        if not len(self.hashes):
            return out
        group = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
        rows = np.flatnonzero(self.hashes[group] == hashes)
        for row, g, second in zip(rows.tolist(), group[rows].tolist(), seconds(rows)):
            out[row] = np.searchsorted(self.seconds[self.starts[g]:self.starts[g + 1]], second)
        return out


NO_TIES = Ties(np.empty(0, np.uint64), np.zeros(1, np.int64), np.empty(0, np.uint64))


class Unpair(Step):
    """Each pair -> a desirable and an undesirable row, each with its POSITION in the
    output: 2 * rank for the desirable row, 2 * rank + 1 for the undesirable one, where a
    row's rank is that of its seeded hash among its label's (ties ranked by a second seeded
    hash; two pairs with one id are an error).

    A two-phase exchange step (meddata/steps/base.py), in the workers: `scan` gives the
    seeded hashes of each pair's two rows (the order's and the tiebreak's: 16 bytes a row),
    `plan` sorts each label's order hashes into a .npy file in the run's spill folder
    (the tiebreak's are kept on disk and read only for tied hashes), which `map`
    memory-maps and looks its rows' hashes up in. The engine puts the rows in the order of
    their positions (meddata/engines/units.py)."""

    name = "unpair"
    stats_key = "kto"
    needs = ("id", "source", "lang", "task", "split", "prompt", "chosen", "rejected",
             "rejected_by")
    adds = tuple(SCHEMA.names)
    passes = 2
    parallel = True
    exchange = True
    worker_state = ("_sorted",)  # the memory maps of the sorted hashes

    def __init__(self, seed: int):
        self.seed = seed
        self.pairs = 0
        self.sorted_paths: tuple[str, ...] = ()  # per label (desirable, undesirable)
        self.ties: tuple[Ties, ...] = (NO_TIES, NO_TIES)
        self.desirable = self.undesirable = 0

    def scan(self, batch: pa.Table) -> pa.Table:
        good, bad = (ids.to_pylist() for ids in labelled_ids(batch.column("id")))
        return pa.table({name: pa.array(seeded_array(self.seed, tag, ids), pa.uint64())
                         for name, tag, ids in (("good", ORDER, good), ("good_tie", TIE, good),
                                                ("bad", ORDER, bad), ("bad_tie", TIE, bad))})

    def plan(self, compact: Iterator[pa.Table], spill_dir: Path) -> None:
        tag = f"unpair-{uuid.uuid4().hex[:12]}"
        spilled = {name: SpilledArray(spill_dir / f"{tag}-{name}", np.uint64)
                   for name in ("good", "good_tie", "bad", "bad_tie")}
        for part in compact:
            for name, array in spilled.items():
                array.append(part.column(name).to_numpy())
        self.pairs = spilled["good"].n
        paths, ties = [], []
        for label in ("good", "bad"):
            firsts, seconds = spilled[label].array(), spilled[f"{label}_tie"].array()
            ordered = np.sort(firsts)
            paths.append(str(spill_dir / f"{tag}-{label}-sorted.npy"))
            np.save(paths[-1], ordered)
            ties.append(Ties.find(ordered, firsts, seconds))
            del ordered
        self.sorted_paths, self.ties = tuple(paths), tuple(ties)
        self.__dict__.pop("_sorted", None)

    def exchange_rows(self) -> int:
        return 2 * self.pairs

    def map(self, batch: pa.RecordBatch, books: Books) -> pa.RecordBatch:
        books.count_out = False  # rows out are counted in pairs, like rows in
        n = batch.num_rows
        books.rows_out += n
        self.desirable += n
        self.undesirable += n
        good, bad = labelled_ids(batch.column("id"))
        rows = [self._rows(batch, good, batch.column("chosen"), True,
                           pa.nulls(n, pa.string()), 2 * self._ranks(0, good)),
                self._rows(batch, bad, batch.column("rejected"), False,
                           batch.column("rejected_by"), 2 * self._ranks(1, bad) + 1)]
        return pa.Table.from_batches(rows).combine_chunks().to_batches()[0]

    def _ranks(self, label: int, labelled: pa.Array) -> np.ndarray:
        """The ranks of a label's rows: where their hashes fall among all the label's."""
        if "_sorted" not in self.__dict__:
            self._sorted = tuple(np.load(p, mmap_mode="r") for p in self.sorted_paths)
        ids = labelled.to_pylist()
        hashes = seeded_array(self.seed, ORDER, ids)
        return np.searchsorted(self._sorted[label], hashes).astype(np.int64) + \
            self.ties[label].offsets(hashes, lambda rows: seeded_array(
                self.seed, TIE, [ids[i] for i in rows.tolist()]))

    @staticmethod
    def _rows(batch: pa.RecordBatch, ids: pa.Array, completion: pa.Array, label: bool,
              rejected_by: pa.Array, places: np.ndarray) -> pa.RecordBatch:
        n = batch.num_rows
        columns = {"id": ids,
                   **{c: batch.column(c) for c in LINEAGE_NAMES if c != "id"},
                   "prompt": batch.column("prompt"), "completion": completion,
                   "label": pa.array(np.full(n, label)), "rejected_by": rejected_by,
                   POSITION: pa.array(places, pa.int64())}
        return pa.RecordBatch.from_arrays([columns[f.name].cast(f.type) for f in UNPAIRED],
                                          schema=UNPAIRED)

    def take_state(self) -> tuple[int, int]:
        state, self.desirable, self.undesirable = (self.desirable, self.undesirable), 0, 0
        return state

    def merge_state(self, state: tuple[int, int]) -> None:
        self.desirable += state[0]
        self.undesirable += state[1]

    def close(self, books: Books) -> None:
        books.info["kto_rows"] = self.desirable + self.undesirable

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
            llamafactory_entry=llamafactory_entry,
            from_kinds=("preference",))
