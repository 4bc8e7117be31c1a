"""Rejected-response strategies for preference and KTO builds.

A strategy gets the rows to pair and the rendered chosen answers, and returns one rejected
text per row (None where it has no candidate). `rejected_by` names the strategy per row.
Strategies register by name in STRATEGIES and load only when asked for; `weak_model`
(builders/weak_model.py) samples a small model.

- distractor: for MCQ, a fluent answer that commits to a wrong option (for a question with
  several correct options, a wrong set: one option flipped in or out), with an
  explanation-shaped body written from templates (it never copies the true explanation);
  for yes/no, the opposite decision. Needs no model.
- cross_sample: the reference answer of another row of the same source, language, task and
  answer format (a <think> block or not) and, where the source records one, the same
  subject (scan, plan and lookup over the stream, in any worker; see CrossSample). A row
  with no such partner is dropped as `no_matching_rejected`.
The rejected answer always has the chosen answer's format and language: the preference
builder checks every pair and drops one that differs (builders/preference.py).
"""

from __future__ import annotations

import importlib
import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from meddata.recipe import Recipe
from meddata.steps import BATCH_ROWS, DUCKDB_MEMORY, StepError, seeded, seeded_array

from . import render

BODY = {
    "en": [
        "{text} fits this question best. The key feature described in the stem points to it "
        "directly, and the other options describe situations that do not match the findings as "
        "closely.",
        "The most appropriate choice is {text}. It is the option most consistent with the "
        "mechanism the question is testing, whereas the alternatives apply to different "
        "clinical settings.",
        "{text} is correct here because it explains the whole presentation; each of the other "
        "options accounts for only part of the picture and would leave key findings "
        "unexplained.",
    ],
    "zh": [
        "{text}最符合题意。题干中描述的关键表现直接指向该选项，其余选项与本题情况不完全相符。",
        "本题应选{text}。它与题目考查的机制最为一致，其他选项适用于不同的临床情况。",
        "{text}能够解释全部临床表现，而其他选项只能解释部分表现，会遗漏关键信息，因此选择{text}。",
    ],
}
DECISION_BODY = {
    "en": ["The findings reported in the study support this conclusion directly, and the size "
           "of the effect makes chance an unlikely explanation.",
           "The study's design and its main outcome point the same way, and the secondary "
           "results are consistent with this answer."],
    "zh": ["研究报告的结果直接支持这一结论，效应大小也使偶然因素难以解释这一结果。",
           "研究设计与主要结局指向同一结论，次要结果也与这一答案一致。"],
}
OPPOSITE = {"yes": ["no"], "no": ["yes"], "maybe": ["yes", "no"]}


@dataclass
class NoRejected:
    """A strategy's answer when it has no rejected text for a row, with the drop reason."""

    reason: str = "no_rejected_candidate"


class Strategy:
    """A way to write rejected answers. One copy works in each process that pairs rows:
    `setup()` builds its heavy state there (a model), and `totals` counts its work for the
    report, handed from each copy to the driver's by `take_state` and `merge_state`."""

    name = ""
    passes = 1  # 2: needs every row first (scan, plan, then lookup) instead of `rejected`

    def __init__(self, recipe: Recipe, store=None, progress: bool = False):
        self.recipe, self.store, self.progress = recipe, store, progress
        self.totals: dict[str, int] = {}

    def setup(self) -> None:
        """Heavy state, built in the process that uses the strategy."""

    def label(self) -> str:
        return self.name

    def applies(self, row: dict[str, Any]) -> bool:
        return True

    def rejected(self, rows: list[dict[str, Any]], chosen: list[str]
                 ) -> list[str | NoRejected | None]:
        """One rejected text per row; None or NoRejected(reason) where there is none."""
        raise NotImplementedError

    def take_state(self) -> dict[str, int]:
        """The totals counted since the last call (then zeroed here)."""
        state, self.totals = dict(self.totals), dict.fromkeys(self.totals, 0)
        return state

    def merge_state(self, state: dict[str, int]) -> None:
        for key, n in state.items():
            self.totals[key] = self.totals.get(key, 0) + n

    def report(self) -> dict[str, Any]:
        return {}


class Distractor(Strategy):
    name = "distractor"

    def applies(self, row: dict[str, Any]) -> bool:
        return row["task"] in ("mcq", "yes_no")

    def one(self, row: dict[str, Any]) -> str | None:
        seed, lang = self.recipe.seed, row.get("lang") or "en"
        h = seeded(seed, "distractor", row["id"])
        if row["task"] == "mcq":
            gold = row.get("answer_label") or ""
            if not gold:
                return None
            if len(gold) > 1:  # several correct options: a wrong set (one option flipped)
                flip = row["options"][h % len(row["options"])]["label"]
                letters = "".join(sorted(set(gold) ^ {flip}))
                picked = [o for o in row["options"] if o["label"] in letters]
                label, text = letters, "; ".join(o["text"] for o in picked)
            else:
                wrong = [o for o in row["options"] if o["label"] != gold]
                if not wrong:
                    return None
                pick = wrong[h % len(wrong)]
                label, text = pick["label"], pick["text"]
            line = render.answer_line(row, label=label, text=text)
            bodies = [t.format(text=text) for t in BODY.get(lang, BODY["en"])]
        elif row["task"] == "yes_no":
            choices = OPPOSITE.get(row.get("answer") or "", [])
            if not choices:
                return None
            line = render.answer_line(row, text=choices[h % len(choices)])
            bodies = DECISION_BODY.get(lang, DECISION_BODY["en"])
        else:
            return None
        return self.shaped(row, line, bodies, h >> 8)

    def shaped(self, row: dict[str, Any], line: str, bodies: list[str], h: int) -> str:
        """The wrong answer in the shape of the row's chosen answer (render.chosen_text): a
        written response after the answer line only where the row has one, and an
        explanation (a <think> block, or inline) only where the chosen has its rationale;
        so format never tells the two apart."""
        first, second = bodies[h % len(bodies)], bodies[(h + 1) % len(bodies)]
        if row.get("response"):
            line, first = f"{line}\n\n{first}", second
        return render.compose(line, first if row.get("rationale") else None,
                              self.recipe.reasoning, after=True)

    def rejected(self, rows, chosen):
        return [self.one(r) for r in rows]


def has_think(text: str | None) -> bool:
    """Whether an answer opens with a <think> block."""
    return bool(text) and text.lstrip().startswith("<think>")


def group_key(row: dict[str, Any], chosen: str) -> str:
    """The group a cross_sample partner must come from: source, language, task and format."""
    return json.dumps([row["source"], row.get("lang"), row.get("task"),
                       "think" if has_think(chosen) else "plain"], ensure_ascii=False)


def subject_of(row: dict[str, Any]) -> str | None:
    """The subject the row's source records for it (JSON), or None."""
    subject = json.loads(row.get("meta") or "{}").get("subject")
    return json.dumps(subject, ensure_ascii=False) if subject else None


COMPACT = pa.schema([("group", pa.uint64()), ("subject", pa.uint64()), ("h", pa.uint64()),
                     ("file", pa.dictionary(pa.int32(), pa.string())), ("row", pa.int32())])


@dataclass
class Partners:
    """cross_sample's plan: the scans' text files (paths), by number, and two memory-mappable
    arrays, the rows' seeded id hashes (sorted) and each one's partner, as file number
    << 32 | row in that file (-1: none)."""

    files: list[str]
    keys: Path
    where: Path


class CrossSample(Strategy):
    """The reference answer of another row of the same group (source, language, task and
    answer format: a <think> block or not) and subject, where the source records one and
    the subject has more rows: each group's rows are ordered by a seeded hash of their ids
    (then by input order) and each takes the next one's answer, cyclically. A row alone in
    its group has no partner (`no_matching_rejected`): an answer in another language or
    format would give the pair away.

    It needs every row before it can answer for any, so it works in three phases, each of
    which may run in another process: `scan` writes a batch's chosen texts to an Arrow IPC
    file of its own and returns compact rows (group, subject and id hashes, the text's
    file and row); `plan`, once, over every scan's compact rows in input order, gives each
    row its partner's place (DuckDB window functions, which spill to disk past their
    memory limit) and saves the lookup as .npy files; `lookup` finds a batch's rows there
    by their id hashes and reads only their partners' texts from the memory-mapped files.
    The rows must have unique ids."""

    name = "cross_sample"
    passes = 2
    OPEN_FILES = 256  # memory-mapped text files a copy keeps open

    def __init__(self, recipe: Recipe, store=None, progress: bool = False):
        super().__init__(recipe, store=store, progress=progress)
        self.totals = {"unmatched": 0}  # rows with no partner
        self._open: dict[str, Any] = {}

    def _hashes(self, rows: list[dict[str, Any]]) -> np.ndarray:
        return seeded_array(self.recipe.seed, "cross", [r["id"] for r in rows])

    def scan(self, rows: list[dict[str, Any]], chosen: list[str], folder: Path) -> pa.Table:
        """The compact rows of `rows`; their chosen texts go to a new file in `folder`
        (uncompressed, so that `lookup` reads single rows of it in place)."""
        n = len(rows)
        path = Path(folder) / f"texts-{uuid.uuid4().hex}.arrow"
        if n:
            tmp = path.with_name(f".{path.name}.tmp")
            with pa.OSFile(str(tmp), "wb") as sink, \
                    pa.ipc.new_file(sink, pa.schema([("chosen", pa.string())])) as writer:
                writer.write_table(pa.table({"chosen": pa.array(chosen, pa.string())}))
            os.replace(tmp, path)
        subjects = [subject_of(r) for r in rows]
        groups = [group_key(r, c) for r, c in zip(rows, chosen)]
        return pa.table({
            "group": seeded_array(0, "group", groups),
            "subject": pa.array(seeded_array(0, "subject", [s or "" for s in subjects]),
                                mask=np.array([s is None for s in subjects], bool)),
            "h": self._hashes(rows),
            "file": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)),
                                                   pa.array([str(path)])),
            "row": pa.array(np.arange(n, dtype=np.int32))}, schema=COMPACT)

    @staticmethod
    def plan(compact: Iterable[pa.Table], folder: Path,
             memory_limit: str = DUCKDB_MEMORY) -> Partners | None:
        """Every row's partner, from every scan's compact rows in input order; None when
        there are no rows."""
        import duckdb
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        folder = Path(folder)
        spill = folder / f"compact-{uuid.uuid4().hex}.parquet"
        number: dict[str, int] = {}  # a scan's text file (its path) -> its number
        writer, k = None, 0
        for part in compact:
            if not part.num_rows:
                continue
            files = pc.dictionary_encode(part.column("file").cast(pa.string())).combine_chunks()
            nums = np.array([number.setdefault(f, len(number)) for f in
                             files.dictionary.to_pylist()], np.int64)[files.indices.to_numpy()]
            table = pa.table({"k": np.arange(k, k + part.num_rows, dtype=np.int64),
                              "g": part.column("group"), "s": part.column("subject"),
                              "h": part.column("h"),
                              "loc": nums << 32 | part.column("row").to_numpy().astype(np.int64)})
            if writer is None:
                writer = pq.ParquetWriter(spill, table.schema)
            writer.write_table(table)
            k += part.num_rows
        if writer is None:
            return None
        writer.close()
        con = duckdb.connect()
        con.execute(f"SET memory_limit = '{memory_limit}'")
        con.execute("SET temp_directory = ?", [str(folder)])
        path = str(spill).replace("'", "''")
        reader = con.sql(f"""
            SELECT h, CASE
                WHEN s IS NOT NULL AND count(*) OVER (PARTITION BY g, s) > 1
                    THEN coalesce(lead(loc) OVER ws, first_value(loc) OVER ws)
                WHEN count(*) OVER (PARTITION BY g) > 1
                    THEN coalesce(lead(loc) OVER wg, first_value(loc) OVER wg)
                ELSE -1 END AS partner
            FROM read_parquet('{path}')
            WINDOW wg AS (PARTITION BY g ORDER BY h, k), ws AS (PARTITION BY g, s ORDER BY h, k)
            ORDER BY h""").to_arrow_reader(BATCH_ROWS)
        tag = spill.stem.removeprefix("compact-")
        plan = Partners(list(number), folder / f"keys-{tag}.npy",
                        folder / f"partners-{tag}.npy")
        keys = np.lib.format.open_memmap(plan.keys, "w+", np.uint64, (k,))
        where = np.lib.format.open_memmap(plan.where, "w+", np.int64, (k,))
        at = 0
        for batch in reader:
            h = batch.column("h").to_numpy()
            if (h[1:] == h[:-1]).any() or (at and h[0] == keys[at - 1]):
                raise StepError("cross_sample needs unique ids, and two rows share an id (or, "
                                "rarely, a 64-bit hash of their ids)")
            keys[at:at + len(h)] = h
            where[at:at + len(h)] = batch.column("partner").to_numpy()
            at += len(h)
        con.close()
        keys.flush()
        where.flush()
        del keys, where
        spill.unlink()
        return plan

    def lookup(self, plan: Partners | None, rows: list[dict[str, Any]]
               ) -> list[str | NoRejected]:
        """The partners' texts of scanned and planned rows."""
        if not rows:
            return []
        h = self._hashes(rows)
        keys = self._opened(plan.keys, np.load) if plan is not None else np.empty(0, np.uint64)
        pos = np.minimum(np.searchsorted(keys, h), max(len(keys) - 1, 0))
        if not len(keys) or (keys[pos] != h).any():
            raise StepError("cross_sample: rows to pair that its plan did not see (the rows "
                            "of the second pass differ from the first's)")
        loc = np.asarray(self._opened(plan.where, np.load)[pos])
        out: list[str | NoRejected] = [NoRejected("no_matching_rejected")] * len(rows)
        have = np.flatnonzero(loc >= 0)
        files, at = loc[have] >> 32, loc[have] & 0xFFFFFFFF
        for f in np.unique(files):
            texts = self._opened(plan.files[f], _texts)
            for i, text in zip(have[files == f].tolist(),
                               texts.take(pa.array(at[files == f])).to_pylist()):
                out[i] = text
        self.totals["unmatched"] += len(rows) - len(have)
        return out

    def _opened(self, path, load):
        """`load(path)`, memory-mapped, kept open for the next batches."""
        if path not in self._open:
            if len(self._open) >= self.OPEN_FILES:
                self._open.clear()
            self._open[path] = load(path, mmap_mode="r")
        return self._open[path]

    def report(self) -> dict[str, Any]:
        return {"unmatched": self.totals["unmatched"]} if self.totals["unmatched"] else {}

    def rejected(self, rows, chosen):
        """All at once, for rows in memory."""
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            plan = self.plan([self.scan(rows, chosen, Path(tmp))], Path(tmp))
            try:
                return self.lookup(plan, rows)
            finally:
                self._open.clear()


def _texts(path: str, mmap_mode: str = "r") -> pa.ChunkedArray:
    """The chosen texts of a scan's file, memory-mapped."""
    return pa.ipc.open_file(pa.memory_map(path, mmap_mode)).read_all().column("chosen")


STRATEGIES: dict[str, str] = {
    "distractor": "meddata.builders.rejected:Distractor",
    "cross_sample": "meddata.builders.rejected:CrossSample",
    "weak_model": "meddata.builders.weak_model:WeakModel",
}


def strategy(name: str, recipe: Recipe, store=None, progress: bool = False) -> Strategy:
    try:
        module, _, cls = STRATEGIES[name].partition(":")
    except KeyError:
        raise ValueError(f"unknown rejected strategy {name!r}; known: "
                         f"{', '.join(sorted(STRATEGIES))}") from None
    return getattr(importlib.import_module(module), cls)(recipe, store=store, progress=progress)
